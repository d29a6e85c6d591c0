"""Stage 2 on cached proposals against the live frozen proposer, side by side on one machine.

One stage 1, then stage 2 four times after it, each a fresh process on a copy of that stage 1:
``cache.mode=off``, ``auto``, ``auto``, ``off`` (alternating, so a drifting machine load falls
on both alike). Per run: the step time, the one-off cost of building the cache, the stage's
training CPU seconds (the build included, as the comparison counts it), peak RSS and mAP.
"""

from __future__ import annotations

import shutil
import statistics
import sys
from pathlib import Path

from bench.processes import spawn

ORDER = ("off", "auto", "auto", "off")
FIGURES = (
    "step_time_ms_median",
    "train_seconds",
    "train_cpu_seconds",
    "startup_seconds",
    "peak_rss_mb",
    "mAP@0.5",
)


def run_all(tmp: Path, env: dict, quick: bool) -> dict:
    from orchestrator.layout import StageFiles, stage_dir

    s1_steps, s2_steps = (20, 20) if quick else (300, 200)
    common = ["model=tiny", "eval.every=null", *(["data.num_train=64", "eval.max_images=8"] if quick else [])]
    base = tmp / "caching-s1"
    _cli([*common, f"stages.s1_rpn.steps={s1_steps}", "stage=s1_rpn", f"hydra.run.dir={base}"], env)
    runs = []
    for i, mode in enumerate(ORDER):
        directory = tmp / f"caching-{i}-{mode}"
        shutil.copytree(stage_dir(base, "s1_rpn"), stage_dir(directory, "s1_rpn"))
        process = _cli([*common, f"stages.s1_rpn.steps={s1_steps}", f"stages.s2_fast_rcnn.steps={s2_steps}",
                        f"cache.mode={mode}", "stage=s2_fast_rcnn", f"hydra.run.dir={directory}"], env)  # fmt: skip
        metrics = StageFiles(stage_dir(directory, "s2_fast_rcnn")).read_metrics()
        row = {"mode": mode, **process, **{k: metrics.get(k) for k in FIGURES}, "cache": metrics.get("cache")}
        print(f"caching s2 #{i} {mode}: {row}", flush=True)
        runs.append(row)
    return {"model": "tiny", "s1_steps": s1_steps, "s2_steps": s2_steps, "runs": runs, **summary(runs)}


def summary(runs: list[dict]) -> dict:
    """Medians per mode and the cached / live ratios of step time and training CPU seconds."""
    out = {}
    for mode in ("off", "auto"):
        rows = [r for r in runs if r["mode"] == mode]
        out[mode] = {
            k: statistics.median(r[k] for r in rows) for k in ("step_time_ms_median", "train_cpu_seconds")
        }
    out["step_ratio"] = round(out["auto"]["step_time_ms_median"] / out["off"]["step_time_ms_median"], 3)
    out["cpu_ratio"] = round(out["auto"]["train_cpu_seconds"] / out["off"]["train_cpu_seconds"], 3)
    return out


def _cli(args: list[str], env: dict) -> dict:
    run = spawn([sys.executable, "-m", "orchestrator", *args], env).check(
        f"python -m orchestrator {' '.join(args)}"
    )
    return {"process_wall_s": round(run.wall_s, 1), "process_cpu_s": round(run.cpu_s, 1),
            "process_peak_rss_mb": round(run.peak_rss_mb)}  # fmt: skip


def section(results: dict) -> list[str]:
    """BENCHMARKS.md: the stage-2 pair table, or how to produce it."""
    if "caching" not in results:
        return ["Stage 2 on cached proposals against live ones: `python -m bench --only caching`.", ""]
    c = results["caching"]
    out = [
        "## Stage 2 on cached proposals (`cache.mode=auto`) against the live frozen proposer (`off`)",
        "",
        f"tiny, built-in data, one stage 1 of {c['s1_steps']} steps, then stage 2 ({c['s2_steps']} steps) four times",
        "after it, each a fresh process, in the order off, auto, auto, off. Training CPU seconds include",
        "building the cache (as the comparison's equal-CPU verdicts count them).",
        "",
        "| # | cache | step ms | train CPU s | cache entries | build s | build CPU s | peak RSS MiB | mAP@0.5 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(c["runs"]):
        cache = r.get("cache") or {}
        out.append(f"| {i} | {r['mode']} | {r['step_time_ms_median']:.1f} | {r['train_cpu_seconds']:.1f} "
                   f"| {cache.get('entries', '-')} | {cache.get('build_seconds', '-')} | {cache.get('build_cpu_seconds', '-')} "
                   f"| {r['peak_rss_mb']} | {r['mAP@0.5']:.3f} |")  # fmt: skip
    out += [
        "",
        f"Cached / live, medians: step time **{c['step_ratio']:.2f}**, training CPU seconds (build included) "
        f"**{c['cpu_ratio']:.2f}**.",
        "",
    ]
    return out
