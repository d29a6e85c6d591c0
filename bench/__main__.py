"""``python -m bench``: measure, side by side on this machine, and write BENCHMARKS.md.

Every case runs in a fresh process (clean TensorFlow state; peak RSS from ``wait4``, or per
stage from the stage's own ``metrics.json``):

1. overhead: our end_to_end step against the stock ``model_lib_v2.train_loop`` on the same
   pipeline.config, tiny and resnet50 at 128x128, batch 2, each pair run twice;
2. whole run: ``stage=all`` on the built-in data in one process, as a user runs it (per stage:
   step time, start-up, evaluation, peak RSS, mAP), then stage 2 with its frozen proposer and
   without one (``schedule=alternating_shared``), each in its own process;
3. scaling: our step time and peak RSS against image size and batch size (tiny).
4. cadence: our CLI at its defaults against the stock loop at ``model_main_tf2.py``'s, whole
   processes in alternation (:mod:`bench.cadence`; ``--only cadence`` runs just this);
5. stacks: legacy (TF 2.15) against current (TF 2.21), step time and the default run's
   verdict on each (:mod:`bench.stacks`; only with ``--only stacks``, about 45 minutes);
6. latency: CPU inference per image, the exported SavedModel against its ONNX model on ONNX
   Runtime, tiny and resnet50 at 128 px (only with ``--only latency``, a few minutes);
7. a busy machine: one stage alone and beside a CPU-bound process, in alternation: wall time
   against the training CPU seconds the comparison's time verdicts use (``--only neighbour``
   runs just this and keeps the other figures).
8. caching: stages 2-4 on cached frozen outputs (read from memory, and from disk) against live
   ones, whole alternating chains in fresh processes, in a mirrored order, tiny and a few
   resnet50 steps (:mod:`bench.caching`; only with ``--only caching``, about 50 minutes).
9. evidence: the defaults study, read from a sweep directory (:mod:`bench.evidence`; only with
   ``--only evidence --sweep DIR [DIR ...]``; the sweep itself takes hours and is run apart).

The whole run uses 500 steps a stage (the default config has 1000) so that the command stays
under 20 minutes on 2 CPU cores. ``--resnet50-stages`` adds a few-step resnet50 run (about five
minutes more); ``--quick`` shrinks every case for a smoke check (its figures are not comparable).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import caching, cadence, evidence, stacks
from bench.processes import ROOT, spawn
from bench.processes import run_case as case
from bench.report import STAGES, write


def cli(args: list[str], env: dict) -> dict:
    run = spawn([sys.executable, "-m", "orchestrator", *args], env).check(
        f"python -m orchestrator {' '.join(args)}"
    )
    return {"process_wall_s": round(run.wall_s, 1), "process_peak_rss_mb": round(run.peak_rss_mb)}


def plan_pipeline(tmp: Path, env: dict, model: str, batch: int = 2, size: int = 128) -> str:
    """Our generated end_to_end pipeline.config for ``model`` (no fine-tune checkpoint: both loops start fresh)."""
    run = tmp / f"plan-{model}-{batch}-{size}"
    cli(["stage=plan", f"model={model}", f"model.batch_size={batch}", f"data.image_size={size}",
         f"hydra.run.dir={run}"], env)  # fmt: skip
    from stages import pipeline as pipelines

    config = pipelines.load_pipeline(run / "plan" / "end_to_end.config")
    config.train_config.ClearField("fine_tune_checkpoint")
    config.train_config.ClearField("fine_tune_checkpoint_type")
    return str(pipelines.write_pipeline(config, run / "bench.config"))


def overhead(tmp: Path, env: dict, quick: bool) -> list[dict]:
    """Stock loop then ours, twice per model; ``per_iteration`` steps per stock ``tf.function`` call."""
    rows = []
    for model, steps, per_iter in (("tiny", 60 if quick else 200, 20), ("resnet50", 6 if quick else 12, 3)):
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


STAGE_FIGURES = ("steps", "wall_seconds", "startup_seconds", "step_time_ms_median", "eval_seconds",
                 "peak_rss_mb", "mAP", "mAP@0.5", "AR@100")  # fmt: skip


def _stage_figures(directory: Path) -> dict:
    from orchestrator.layout import StageFiles

    metrics = StageFiles(directory).read_metrics()
    return {k: metrics.get(k) for k in STAGE_FIGURES}


def whole_run(tmp: Path, env: dict, model: str, steps: int, extra: list[str]) -> dict:
    """``stage=all`` in one process (stages, baseline, comparison report), then the stage-2 pair."""
    from orchestrator.layout import stage_dir

    run = tmp / f"run-{model}"
    common = [f"model={model}", f"steps={steps}", *extra]
    process = cli([*common, "stage=all", f"hydra.run.dir={run}"], env)
    stages = {name: _stage_figures(stage_dir(run, name)) for name in STAGES}
    for name, row in stages.items():
        print(f"stage {model} {name}: {row}", flush=True)
    pair = {}
    for variant, schedule in (
        ("s2_with_proposer", "alternating"),
        ("s2_without_proposer", "alternating_shared"),
    ):
        directory = tmp / f"{variant}-{model}"
        shutil.copytree(stage_dir(run, "s1_rpn"), stage_dir(directory, "s1_rpn"))
        s2_steps = f"stages.s2_fast_rcnn.steps={min(steps, 150)}"
        proc = cli(
            [*common, s2_steps, f"schedule={schedule}", "stage=s2_fast_rcnn", f"hydra.run.dir={directory}"],
            env,
        )
        pair[variant] = {**proc, **_stage_figures(stage_dir(directory, "s2_fast_rcnn"))}
        print(f"{variant} {model}: {pair[variant]}", flush=True)
    return {
        "model": model,
        "steps_per_stage": steps,
        "run_dir": str(run),
        **process,
        "stages": stages,
        **pair,
    }


def scaling(tmp: Path, env: dict, quick: bool) -> list[dict]:
    """One process per image size; batch sizes in turn, each with its own RSS high-water mark."""
    rows = []
    for size in (128, 256) if quick else (128, 256, 512):
        pipeline = plan_pipeline(tmp, env, "tiny", size=size)
        result = case("scaling", env, pipeline=pipeline, batches=[1, 2, 4], steps=10 if quick else 15)
        for batch, row in zip([1, 2, 4], result["batches"], strict=True):
            rows.append({"image_size": size, "batch": batch, **row})
            print(
                f"scaling {size}px batch {batch}: {row['step_ms']:.1f} ms, {row['peak_rss_mb']} MiB",
                flush=True,
            )
    return rows


def neighbour(tmp: Path, env: dict, quick: bool) -> dict:
    """s1_rpn alone and beside a busy-looping process, in alternation: wall against CPU seconds."""
    from orchestrator.layout import StageFiles, stage_dir

    steps = 60 if quick else 300
    runs = []
    for repeat in range(1 if quick else 2):
        for label in ("alone", "beside a CPU-bound neighbour"):
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if label != "alone" else None
            run = tmp / f"neighbour-{repeat}-{len(runs)}"
            try:
                cli(
                    [
                        "stage=s1_rpn",
                        f"stages.s1_rpn.steps={steps}",
                        "eval.every=null",
                        f"hydra.run.dir={run}",
                    ],
                    env,
                )
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
            metrics = StageFiles(stage_dir(run, "s1_rpn")).read_metrics()
            row = {k: metrics[k] for k in ("train_cpu_seconds", "train_seconds", "wall_seconds")}
            runs.append({"label": label, **row})
            print(f"neighbour {label}: {row}", flush=True)
    pairs = list(zip(runs[::2], runs[1::2], strict=True))
    ratio = lambda key: statistics.median(b[key] / a[key] for a, b in pairs)  # noqa: E731
    return {
        "stage": "s1_rpn",
        "steps": steps,
        "runs": runs,
        "cpu_ratio": round(ratio("train_cpu_seconds"), 3),
        "wall_ratio": round(ratio("train_seconds"), 3),
        "tolerance": 0.15,
        "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }


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
    parser.add_argument(
        "--resnet50-stages", action="store_true", help="also a few-step resnet50 run (+5 min)"
    )
    parser.add_argument("--out", default=str(ROOT), help="where BENCHMARKS.md goes")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite BENCHMARKS.md from bench/results.json"
    )
    parser.add_argument(
        "--only",
        choices=["neighbour", "cadence", "stacks", "evidence", "latency", "caching"],
        help="run one case, keep the other figures of bench/results.json",
    )
    parser.add_argument(
        "--other-python",
        default=str(ROOT / ".venv-current" / "bin" / "python"),
        help="the other stack's interpreter for --only stacks (made by FRCNN_ALT_VENV=.venv-current scripts/setup.sh)",
    )
    parser.add_argument(
        "--sweep",
        type=Path,
        nargs="+",
        help="the study's sweep directories (one or more), for --only evidence",
    )
    args = parser.parse_args()
    if args.only == "evidence" and not args.sweep:
        parser.error("--only evidence needs --sweep DIR (the hydra.sweep.dir of the defaults study)")

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
    started = time.time()
    quick = args.quick
    results = {"machine": machine(), "quick": quick}

    def save() -> None:  # after each case group: partial figures survive a failed case
        raw.write_text(json.dumps(results, indent=2))

    if args.only:
        kept = json.loads(raw.read_text())
        if args.only == "neighbour":
            kept["neighbour"] = neighbour(tmp, env, quick)
        elif args.only == "evidence":
            kept["evidence"] = evidence.collect([d.resolve() for d in args.sweep])
            (Path(args.out) / evidence.PLOT).parent.mkdir(parents=True, exist_ok=True)
            evidence.plot(kept["evidence"], Path(args.out) / evidence.PLOT)
        elif args.only == "latency":
            kept["latency"] = {
                m: case("latency", env, pipeline=plan_pipeline(tmp, env, m), images=10 if quick else 50)
                for m in ("tiny", "resnet50")
            }
        elif args.only == "caching":
            kept["caching"] = caching.run_all(tmp, env, quick)
            kept["caching_machine"] = machine()
        elif args.only == "cadence":
            kept["cadence"] = cadence.run_all(tmp, env, quick)
        else:
            kept["stacks"] = stacks.run_all(
                tmp, env, quick, args.other_python, lambda m: plan_pipeline(tmp, env, m)
            )
        raw.write_text(json.dumps(kept, indent=2))
        write(kept, Path(args.out))
        return
    small_data = ["data.num_train=64", "data.num_val=8", "eval.max_images=8"]
    results["overhead"] = overhead(tmp, env, quick)
    save()
    tiny_extra = [*small_data, "backbone.pretrain_steps=50"] if quick else []
    results["whole_run"] = whole_run(tmp, env, "tiny", 20 if quick else 500, tiny_extra)
    save()
    if args.resnet50_stages:
        results["resnet50_stages"] = whole_run(tmp, env, "resnet50", 3 if quick else 6, small_data)
    results["scaling"] = scaling(tmp, env, quick)
    results["neighbour"] = neighbour(tmp, env, quick)
    save()
    results["cadence"] = cadence.run_all(tmp, env, quick)
    results["bench_minutes"] = round((time.time() - started) / 60, 1)
    write(results, Path(args.out))
    print(f"{results['bench_minutes']} min; runs kept in {tmp} (whole run: {tmp / 'run-tiny'})", flush=True)


if __name__ == "__main__":
    main()
