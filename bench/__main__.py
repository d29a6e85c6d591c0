"""``python -m bench``: measure, side by side on this machine, and write BENCHMARKS.md.

Every case runs in its own process (clean TensorFlow state; peak RSS from ``wait4``):

1. overhead: our end_to_end step against the stock ``model_lib_v2.train_loop`` on the same
   pipeline.config, tiny and resnet50 at 128x128, batch 2, repeated;
2. stage costs: each stage as its own CLI process (step time, start-up, peak RSS), stage 2
   with the frozen proposer and without it (``schedule=alternating_shared``);
3. whole run: the default ``stage=all`` on the built-in data (wall time and mAP per method);
4. scaling: step time against image size and batch size (tiny).

``--quick`` shrinks every case (for a smoke check; its figures are not the committed ones).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["s1_rpn", "s2_fast_rcnn", "s3_rpn_shared", "s4_detector_head", "end_to_end"]


def _spawn(args: list[str], env: dict) -> tuple[int, float, float, str]:
    """(exit code, wall seconds, peak RSS MiB, stdout) of one child process."""
    started = time.time()
    out = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    return proc.returncode, time.time() - started, usage.ru_maxrss / 1024, out.read()


def case(name: str, env: dict, **kwargs) -> dict:
    code, wall, rss, stdout = _spawn([sys.executable, "-m", "bench.cases", name, json.dumps(kwargs)], env)
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if code or not lines:
        raise RuntimeError(f"bench case {name} {kwargs} failed (exit {code})")
    return {**json.loads(lines[-1][7:]), "process_wall_s": round(wall, 1), "peak_rss_mb": round(rss)}


def cli(args: list[str], env: dict) -> dict:
    code, wall, rss, _ = _spawn([sys.executable, "-m", "orchestrator", *args], env)
    if code:
        raise RuntimeError(f"python -m orchestrator {' '.join(args)} failed (exit {code})")
    return {"process_wall_s": round(wall, 1), "peak_rss_mb": round(rss)}


def plan_pipeline(tmp: Path, env: dict, model: str, batch: int = 2, size: int = 128) -> str:
    """Our generated end_to_end pipeline.config for ``model`` (no fine-tune checkpoint: both loops start fresh)."""
    run = tmp / f"plan-{model}-{batch}-{size}"
    cli(
        [
            "stage=plan",
            f"model={model}",
            f"model.batch_size={batch}",
            f"data.image_size={size}",
            f"hydra.run.dir={run}",
        ],
        env,
    )
    from stages import pipeline as pipelines

    config = pipelines.load_pipeline(run / "end_to_end" / "pipeline.config")
    config.train_config.ClearField("fine_tune_checkpoint")
    config.train_config.ClearField("fine_tune_checkpoint_type")
    return str(pipelines.write_pipeline(config, run / "bench.config"))


def overhead(tmp: Path, env: dict, quick: bool) -> list[dict]:
    rows = []
    for model, steps, per_iter in (("tiny", 60 if quick else 300, 20), ("resnet50", 10 if quick else 40, 10)):
        pipeline = plan_pipeline(tmp, env, model)
        for repeat in range(1 if quick else 2):
            stock = case("stock", env, pipeline=pipeline, steps=steps, per_iteration=per_iter)
            ours = case("ours", env, pipeline=pipeline, steps=steps)
            rows.append({"model": model, "repeat": repeat, "steps": steps, "stock": stock, "ours": ours,
                         "ratio": round(stock["step_ms"] / ours["step_ms"], 3)})  # fmt: skip
            print(
                f"overhead {model} #{repeat}: stock {stock['step_ms']:.1f} ms, ours {ours['step_ms']:.1f} ms",
                flush=True,
            )
    return rows


def stage_costs(tmp: Path, env: dict, model: str, steps: int | None, extra: list[str]) -> dict:
    """Each stage in its own process; ``steps=None`` keeps the default config (the whole-run figures)."""
    run = tmp / f"stages-{model}"
    step_args = [f"steps={steps}"] if steps else []
    common = [f"model={model}", *step_args, f"hydra.run.dir={run}", *extra]
    rows = {}
    for name in STAGES:
        proc = cli([*common, f"stage={name}"], env)
        metrics = json.loads(
            (
                run / ("end_to_end" if name == "end_to_end" else f"alternating/{name}") / "metrics.json"
            ).read_text()
        )
        rows[name] = {
            **proc,
            **{
                k: metrics.get(k)
                for k in (
                    "steps",
                    "wall_seconds",
                    "startup_seconds",
                    "step_time_ms_median",
                    "mAP",
                    "mAP@0.5",
                    "AR@100",
                )
            },
        }
        print(f"stage {model} {name}: {rows[name]}", flush=True)
    shared = tmp / f"stages-{model}-shared"
    (shared / "alternating").mkdir(parents=True)
    shutil.copytree(run / "alternating" / "s1_rpn", shared / "alternating" / "s1_rpn")
    shared_args = [
        f"model={model}",
        *step_args,
        f"hydra.run.dir={shared}",
        "schedule=alternating_shared",
        *extra,
    ]
    proc = cli([*shared_args, "stage=s2_fast_rcnn"], env)
    metrics = json.loads((shared / "alternating/s2_fast_rcnn/metrics.json").read_text())
    rows["s2_without_proposer"] = {
        **proc,
        "step_time_ms_median": metrics["step_time_ms_median"],
        "startup_seconds": metrics["startup_seconds"],
    }
    return rows


def scaling(tmp: Path, env: dict, quick: bool) -> list[dict]:
    rows = []
    for size in (128, 256) if quick else (128, 256, 512):
        for batch in (1, 2, 4):
            pipeline = plan_pipeline(tmp, env, "tiny", batch=batch, size=size)
            result = case("scaling", env, pipeline=pipeline, steps=12 if quick else 20)
            rows.append({"image_size": size, "batch": batch, **result})
            print(f"scaling {size}px batch {batch}: {result['step_ms']:.1f} ms", flush=True)
    return rows


def machine() -> dict:
    import object_detection
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "tensorflow": tf.__version__,
        "object_detection": getattr(object_detection, "__version__", "tf-object-detection-api 0.1"),
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run; figures not comparable")
    parser.add_argument("--out", default=str(ROOT), help="where BENCHMARKS.md goes")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite BENCHMARKS.md from bench/results.json"
    )
    args = parser.parse_args()
    from bench.report import write

    raw = Path(args.out) / "bench" / "results.json"
    if args.report_only:
        write(json.loads(raw.read_text()), Path(args.out))
        return
    raw.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="frcnn-bench-"))
    env = {
        **os.environ,
        "FRCNN_ALT_CACHE": os.environ.get("FRCNN_ALT_CACHE", str(Path("~/.cache/frcnn-alt").expanduser())),
    }
    quick = args.quick
    results = {"machine": machine(), "quick": quick}
    results["overhead"] = overhead(tmp, env, quick)
    raw.write_text(json.dumps(results, indent=2))
    tiny_extra = (
        ["data.num_train=64", "data.num_val=8", "eval.max_images=8", "backbone.pretrain_steps=50"]
        if quick
        else []
    )
    results["stages_tiny"] = stage_costs(tmp, env, "tiny", 20 if quick else None, tiny_extra)
    raw.write_text(json.dumps(results, indent=2))
    cli(
        [f"hydra.run.dir={tmp / 'stages-tiny'}", "stage=compare", *tiny_extra], env
    )  # comparison/ for the README
    results["stages_resnet50"] = stage_costs(
        tmp, env, "resnet50", 3 if quick else 6, ["eval.max_images=4", "data.num_train=64", "data.num_val=8"]
    )
    results["scaling"] = scaling(tmp, env, quick)
    raw.write_text(json.dumps(results, indent=2))
    write(results, Path(args.out))
    print(f"runs kept in {tmp} (the tiny default run: {tmp / 'stages-tiny'})", flush=True)


if __name__ == "__main__":
    main()
