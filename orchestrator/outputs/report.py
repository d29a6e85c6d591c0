"""The comparison: alternating (4 stages) against end-to-end, as Markdown, JSON and a plot.

Reads only what the stages wrote (``metrics.json`` and TensorBoard event files), so
``stage=compare`` can be rerun on any finished run directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from orchestrator.layout import StageFiles

log = logging.getLogger(__name__)

PAPER_CONTEXT = [
    ("Faster R-CNN paper, VOC07 test mAP, VGG-16", "68.5 (unshared)", "69.9 (4-step, shared)"),
    ("Faster R-CNN paper, VOC07 test mAP, ZF", "58.7 (unshared)", "59.9 (4-step, shared)"),
    ("Faster R-CNN paper, approximate joint training", "-", "25-50% less training time than 4-step"),
    ("py-faster-rcnn README, VGG16 VOC", "-", "end-to-end ~1.5x faster, similar mAP"),
    ("Paper Table 9, RPN loss weight lambda 0.1/1/10/100", "-", "mAP 67.2 / 68.9 / 69.9 / 69.1"),
]
METRIC_KEYS = ("mAP", "mAP@0.5", "AR@100", "recall@300_iou0.7")


def _scalars(directory: Path, tag: str) -> list[tuple[int, float]]:
    if not directory.is_dir():
        return []
    acc = EventAccumulator(str(directory), size_guidance={"tensors": 0})
    acc.Reload()
    if tag not in acc.Tags().get("tensors", []):
        return []
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def collect(stages: list[str], stage_dirs: dict[str, Path]) -> dict:
    """comparison.json: per-stage figures, totals and curves of both methods."""
    rows = {}
    for name in [*stages, "end_to_end"]:
        metrics = StageFiles(stage_dirs[name]).read_metrics()
        rows[name] = {
            "steps": metrics["steps"],
            "wall_seconds": metrics["wall_seconds"],
            "train_seconds": metrics.get("train_seconds"),
            "step_time_ms_median": metrics.get("step_time_ms_median"),
            "frozen_audit": "passed" if metrics["frozen_audit"]["passed"] else "FAILED",
            **{k: metrics.get(k) for k in METRIC_KEYS},
            "loss_curve": _scalars(stage_dirs[name] / "train", "Loss/total_loss"),
        }
    last = rows[stages[-1]]
    e2e = rows["end_to_end"]
    alt_wall = sum(rows[s]["wall_seconds"] for s in stages)
    return {
        "stages": rows,
        "alternating": {
            "steps": sum(rows[s]["steps"] for s in stages),
            "wall_seconds": round(alt_wall, 2),
            **{k: last[k] for k in METRIC_KEYS},
        },
        "end_to_end": {
            "steps": e2e["steps"],
            "wall_seconds": e2e["wall_seconds"],
            **{k: e2e[k] for k in METRIC_KEYS},
        },
        "end_to_end_time_saving": round(1 - e2e["wall_seconds"] / alt_wall, 3) if alt_wall else None,
        "paper_context": PAPER_CONTEXT,
    }


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(data: dict) -> str:
    head = "| stage | steps | wall s | step ms | mAP | mAP@0.5 | AR@100 | recall@300 IoU.7 | frozen audit |"
    lines = [head, "|" + "---|" * 9]
    for name, row in data["stages"].items():
        cells = [name, row["steps"], _fmt(row["wall_seconds"], 1), _fmt(row["step_time_ms_median"], 1)]
        cells += [row[k] for k in METRIC_KEYS] + [row["frozen_audit"]]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    for label in ("alternating", "end_to_end"):
        row = data[label]
        cells = [
            f"**{label} total**",
            row["steps"],
            _fmt(row["wall_seconds"], 1),
            None,
            *[row[k] for k in METRIC_KEYS],
            "",
        ]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    saving = data["end_to_end_time_saving"]
    lines += [
        "",
        (
            f"end_to_end took {abs(saving):.0%} {'less' if saving >= 0 else 'more'} wall time than the 4 alternating "
            f"stages at equal total steps (stage time: build, restore, training, checkpoints; evaluation excluded)."
            if saving is not None
            else ""
        ),
        "",
        "| context (paper / reference implementation) | unshared / baseline | result |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in data["paper_context"]],
    ]
    return "\n".join(lines)


def plot(data: dict, path: Path, stages: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(19, 4))
    for name in stages:
        curve = data["stages"][name]["loss_curve"]
        if curve:
            axes[0].plot(*zip(*curve, strict=True), label=f"alternating {name}")
    e2e = data["stages"]["end_to_end"]["loss_curve"]
    if e2e:
        axes[0].plot(*zip(*e2e, strict=True), "k--", label="end_to_end")
    axes[0].set(xlabel="cumulative steps", ylabel="total loss", title="training loss", yscale="log")
    axes[0].legend(fontsize=7)
    steps, wall = 0, 0.0
    for name in stages:
        row = data["stages"][name]
        steps, wall = steps + row["steps"], wall + row["wall_seconds"]
        if row["mAP@0.5"] is not None:
            axes[1].plot(steps, row["mAP@0.5"], "o", label=f"alternating after {name}")
            axes[2].plot(wall, row["mAP@0.5"], "o", label=f"alternating after {name}")
    e = data["end_to_end"]
    axes[1].plot(e["steps"], e["mAP@0.5"] or 0, "k*", markersize=12, label="end_to_end")
    axes[2].plot(e["wall_seconds"], e["mAP@0.5"] or 0, "k*", markersize=12, label="end_to_end")
    axes[1].set(xlabel="cumulative steps", ylabel="val mAP@0.5", title="mAP@0.5 against steps")
    axes[2].set(xlabel="cumulative wall seconds", ylabel="val mAP@0.5", title="mAP@0.5 against wall time")
    for ax in axes[1:3]:
        ax.legend(fontsize=7)
    names = [*stages, "end_to_end"]
    axes[3].bar(names, [data["stages"][n]["wall_seconds"] for n in names], color=["C0"] * len(stages) + ["k"])
    axes[3].set(ylabel="wall seconds", title="wall time per stage")
    axes[3].tick_params(axis="x", rotation=30, labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(stages: list[str], stage_dirs: dict[str, Path], run_dir: Path) -> str:
    """Write ``<run>/comparison/{report.md, comparison.json, comparison.png}``; returns the Markdown."""
    out = run_dir / "comparison"
    out.mkdir(parents=True, exist_ok=True)
    data = collect(stages, stage_dirs)
    text = markdown(data)
    (out / "comparison.json").write_text(json.dumps(data, indent=2))
    (out / "report.md").write_text(f"# Alternating vs end-to-end: {run_dir}\n\n{text}\n")
    plot(data, out / "comparison.png", stages)
    return text
