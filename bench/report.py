"""BENCHMARKS.md and bench/results.json from the figures of ``python -m bench``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

STAGES = ["s1_rpn", "s2_fast_rcnn", "s3_rpn_shared", "s4_detector_head", "end_to_end"]


def _f(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def overhead_table(rows: list[dict]) -> list[str]:
    out = [
        "| model | steps | stock step ms (runs) | ours step ms (runs) | ratio stock/ours (median, spread) |",
        "|---|---|---|---|---|",
    ]
    for model in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == model]
        stock = [r["stock"]["step_ms"] for r in rs]
        ours = [r["ours"]["step_ms"] for r in rs]
        ratios = [r["ratio"] for r in rs]
        out.append(
            f"| {model} | {rs[0]['steps']} | {', '.join(_f(v) for v in stock)} | {', '.join(_f(v) for v in ours)} | "
            f"**{np.median(ratios):.2f}** ({min(ratios):.2f}-{max(ratios):.2f}) |"
        )
    return out


def stage_table(rows: dict) -> list[str]:
    e2e = rows["end_to_end"]["step_time_ms_median"]
    out = [
        "| stage | step ms | x end_to_end step | start-up s | peak RSS MiB | process wall s | mAP@0.5 | AR@100 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in [*STAGES, "s2_without_proposer"]:
        r = rows[name]
        rel = r["step_time_ms_median"] / e2e if r.get("step_time_ms_median") and e2e else None
        out.append(
            f"| {name} | {_f(r.get('step_time_ms_median'))} | {_f(rel, 2)} | {_f(r.get('startup_seconds'))} | "
            f"{r['peak_rss_mb']} | {r['process_wall_s']} | {_f(r.get('mAP@0.5'), 3)} | {_f(r.get('AR@100'), 3)} |"
        )
    return out


def whole_run(rows: dict) -> list[str]:
    alt = sum(rows[s]["process_wall_s"] for s in STAGES[:4])
    e2e = rows["end_to_end"]["process_wall_s"]
    steps_alt = sum(rows[s]["steps"] for s in STAGES[:4])
    return [
        "| method | steps | wall s (processes) | final mAP | final mAP@0.5 |",
        "|---|---|---|---|---|",
        f"| alternating (4 stages) | {steps_alt} | {alt:.0f} | {_f(rows['s4_detector_head']['mAP'], 3)} | {_f(rows['s4_detector_head']['mAP@0.5'], 3)} |",
        f"| end_to_end | {rows['end_to_end']['steps']} | {e2e:.0f} | {_f(rows['end_to_end']['mAP'], 3)} | {_f(rows['end_to_end']['mAP@0.5'], 3)} |",
        f"| end_to_end time saving | | **{1 - e2e / alt:.0%}** | | |",
        "| paper (context): approximate joint training | | 25-50% less | similar | |",
    ]


def scaling_table(rows: list[dict]) -> list[str]:
    sizes = sorted({r["image_size"] for r in rows})
    batches = sorted({r["batch"] for r in rows})
    out = [
        "| image size \\ batch | " + " | ".join(str(b) for b in batches) + " |",
        "|---" * (len(batches) + 1) + "|",
    ]
    for size in sizes:
        cells = []
        for b in batches:
            r = next(r for r in rows if r["image_size"] == size and r["batch"] == b)
            cells.append(f"{r['step_ms']:.1f} ms ({r['peak_rss_mb']} MiB)")
        out.append(f"| {size} | " + " | ".join(cells) + " |")
    return out


def write(results: dict, out_dir: Path) -> None:
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"`python -m bench` on {m['cores']} cores ({m['cpu']}), Python {m['python']}, TensorFlow {m['tensorflow']}, "
        f"{m['date']}{' (--quick: smoke figures)' if results['quick'] else ''}. Raw figures: `bench/results.json`.",
        "Step times are medians over the steps after tracing; every case runs in its own process.",
        "",
        "## Our end_to_end step against the stock `model_lib_v2.train_loop` (128x128, batch 2)",
        "",
        *overhead_table(results["overhead"]),
        "",
        "Ratio > 1: ours is faster. Same generated pipeline.config, same data, both from fresh weights.",
        "",
        "## Stage costs, tiny (default config, one process per stage)",
        "",
        *stage_table(results["stages_tiny"]),
        "",
        "## Stage costs, resnet50 (6 steps a stage, no pre-trained weights: step time and start-up, not accuracy)",
        "",
        *stage_table(results["stages_resnet50"]),
        "",
        "## Whole run, tiny, built-in data: alternating against end-to-end at equal total steps",
        "",
        *whole_run(results["stages_tiny"]),
        "",
        "## Scaling: our end_to_end step, tiny (step time, peak RSS)",
        "",
        *scaling_table(results["scaling"]),
        "",
    ]
    (out_dir / "BENCHMARKS.md").write_text("\n".join(lines))
    (out_dir / "bench").mkdir(exist_ok=True)
    (out_dir / "bench" / "results.json").write_text(json.dumps(results, indent=2))
    print("\n".join(lines), flush=True)
