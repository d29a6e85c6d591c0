"""The comparison: alternating (4 stages) against end-to-end, as Markdown, JSON and a plot.

Reads only what the stages wrote (``metrics.json`` and TensorBoard event files), so
``stage=compare`` can be rerun on any finished run directory.

Time verdicts use process CPU seconds (user + system) of training, which a busy machine
does not inflate the way it inflates wall seconds; wall seconds stay in the table. Each stage
evaluates periodically while it trains (``eval.every``), so each method has an anytime curve:
the report reads the methods against each other at equal steps (the final points) and at
equal training CPU time (one method's curve read at the other's total, by linear
interpolation between its evaluated points).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from orchestrator.layout import StageFiles
from orchestrator.outputs import study

log = logging.getLogger(__name__)

PAPER_CONTEXT = [
    ("Faster R-CNN paper, VOC07 test mAP, VGG-16", "68.5 (unshared)", "69.9 (4-step, shared)"),
    ("Faster R-CNN paper, VOC07 test mAP, ZF", "58.7 (unshared)", "59.9 (4-step, shared)"),
    ("Faster R-CNN paper, approximate joint training", "-", "25-50% less training time than 4-step"),
    ("py-faster-rcnn README, VGG16 VOC", "-", "end-to-end ~1.5x faster, similar mAP"),
    ("Paper Table 9, RPN loss weight lambda 0.1/1/10/100", "-", "mAP 67.2 / 68.9 / 69.9 / 69.1"),
]
METRIC_KEYS = ("mAP", "mAP@0.5", "AR@100", "recall@300_iou0.7")
VERDICT_METRIC = "mAP@0.5"
METHODS = ("alternating", "end_to_end")


def _scalars(directory: Path, tag: str) -> list[tuple[int, float]]:
    if not directory.is_dir():
        return []
    acc = EventAccumulator(str(directory), size_guidance={"tensors": 0})
    acc.Reload()
    if tag not in acc.Tags().get("tensors", []):
        return []
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def _stage_row(directory: Path) -> dict:
    metrics = StageFiles(directory).read_metrics()
    return {
        "steps": metrics["steps"],
        "wall_seconds": metrics["wall_seconds"],
        "train_seconds": metrics.get("train_seconds"),
        "train_cpu_seconds": metrics.get("train_cpu_seconds"),
        "eval_cpu_seconds": metrics.get("eval_cpu_seconds"),
        "step_time_ms_median": metrics.get("step_time_ms_median"),
        "frozen_audit": "passed" if metrics["frozen_audit"]["passed"] else "FAILED",
        **{k: metrics.get(k) for k in METRIC_KEYS},
        "loss_curve": _scalars(StageFiles(directory).train_events, "Loss/total_loss"),
        "curve": metrics.get("curve", []),
    }


def method_curve(rows: list[tuple[str, dict]]) -> list[dict]:
    """One method's anytime curve: its stages' evaluated points on cumulative steps and CPU seconds."""
    points, steps, cpu = [], 0, 0.0
    for name, row in rows:
        for point in row["curve"]:
            points.append(
                {
                    "stage": name,
                    "step": steps + point["step"],
                    "train_cpu_seconds": round(cpu + point["train_cpu_seconds"], 2),
                    **{k: point.get(k) for k in METRIC_KEYS},
                }
            )
        steps += row["steps"]
        cpu += row["train_cpu_seconds"] or 0.0
    return points


def _sum(values) -> float | None:
    values = list(values)
    return None if any(v is None for v in values) else round(sum(values), 2)


def _totals(rows: list[dict], final: dict) -> dict:
    return {
        "steps": sum(r["steps"] for r in rows),
        "wall_seconds": _sum(r["wall_seconds"] for r in rows),
        "train_cpu_seconds": _sum(r["train_cpu_seconds"] for r in rows),
        "eval_cpu_seconds": _sum(r["eval_cpu_seconds"] for r in rows),
        **{k: final[k] for k in METRIC_KEYS},
    }


def collect(stages: list[str], stage_dirs: dict[str, Path]) -> dict:
    """comparison.json: per-stage figures, totals, anytime curves and the verdicts."""
    rows = {name: _stage_row(stage_dirs[name]) for name in [*stages, "end_to_end"]}
    alternating = [rows[s] for s in stages]
    data = {
        "stages": rows,
        "alternating": _totals(alternating, rows[stages[-1]]),
        "end_to_end": _totals([rows["end_to_end"]], rows["end_to_end"]),
        "curves": {
            "alternating": method_curve([(s, rows[s]) for s in stages]),
            "end_to_end": method_curve([("end_to_end", rows["end_to_end"])]),
        },
        "paper_context": PAPER_CONTEXT,
    }
    data["end_to_end_cpu_saving"] = _saving(data, "train_cpu_seconds")
    data["end_to_end_time_saving"] = _saving(data, "wall_seconds")
    data["verdicts"] = verdicts(data)
    return data


def _saving(data: dict, key: str) -> float | None:
    alt, e2e = data["alternating"][key], data["end_to_end"][key]
    return round(1 - e2e / alt, 3) if alt and e2e is not None else None


def read_curve_at(curve: list[dict], cpu_seconds: float, metric: str) -> float | None:
    """``metric`` of a curve at ``cpu_seconds`` (linear between points; None outside the curve)."""
    points = [(p["train_cpu_seconds"], p[metric]) for p in curve if p.get(metric) is not None]
    if not points or not points[0][0] <= cpu_seconds <= points[-1][0]:
        return None
    xs, ys = zip(*points, strict=True)
    return float(np.interp(cpu_seconds, xs, ys))


def _ahead(a: float, b: float) -> str:
    if abs(a - b) < 5e-4:
        return "level"
    return f"{'alternating' if a > b else 'end_to_end'} ahead by {abs(a - b):.3f}"


def equal_steps_verdict(data: dict, metric: str = VERDICT_METRIC) -> str:
    alt, e2e = data["alternating"], data["end_to_end"]
    if alt[metric] is None or e2e[metric] is None:
        return f"At equal steps: no {metric} for one of the methods."
    return (
        f"At equal steps ({alt['steps']} alternating, {e2e['steps']} end_to_end), {metric} is "
        f"{alt[metric]:.3f} for alternating and {e2e[metric]:.3f} for end_to_end ({_ahead(alt[metric], e2e[metric])})."
    )


def equal_cpu_verdicts(data: dict, metric: str = VERDICT_METRIC) -> list[str]:
    """Each method's final point against the other's curve at the same training CPU seconds."""
    out = []
    for method, other in (("alternating", "end_to_end"), ("end_to_end", "alternating")):
        budget, final = data[method]["train_cpu_seconds"], data[method][metric]
        if budget is None or final is None:
            continue
        curve = data["curves"][other]
        value = read_curve_at(curve, budget, metric)
        if value is None:
            end = max((p["train_cpu_seconds"] for p in curve), default=0.0)
            if end and budget > end:
                continue  # the other method finished earlier: its final point is the comparison
            out.append(
                f"At {method}'s training CPU time ({budget:.0f} CPU s), {other}'s curve has no point yet."
            )
            continue
        pair = (final, value) if method == "alternating" else (value, final)
        out.append(
            f"At equal training CPU time ({budget:.0f} CPU s, all of {method}'s training), {metric} is "
            f"{pair[0]:.3f} for alternating and {pair[1]:.3f} for end_to_end, {other} read off its curve "
            f"({_ahead(*pair)})."
        )
    return out


def time_verdict(data: dict) -> str:
    cpu, wall = data["end_to_end_cpu_saving"], data["end_to_end_time_saving"]
    if cpu is None:
        return ""
    wall_text = f"; wall time: {abs(wall):.0%} {'less' if wall >= 0 else 'more'}" if wall is not None else ""
    return (
        f"end_to_end used {abs(cpu):.0%} {'less' if cpu >= 0 else 'more'} training CPU time than the 4 "
        f"alternating stages at equal total steps (process CPU seconds, user + system, of the "
        f"training loops; evaluation excluded{wall_text}, which a busy machine inflates)."
    )


def verdicts(data: dict) -> dict:
    return {
        "equal_steps": equal_steps_verdict(data),
        "equal_cpu": equal_cpu_verdicts(data),
        "time": time_verdict(data),
        "crossings": crossings(data["curves"]["alternating"], data["curves"]["end_to_end"]),
    }


def crossings(alternating: list[dict], end_to_end: list[dict], metric: str = VERDICT_METRIC) -> list[dict]:
    """Steps where the two methods' curves cross (the seed study's rule, on one run's curves)."""

    def as_curve(points: list[dict]) -> dict | None:
        pairs = study.curve_points(points, metric)
        return {"step": [s for s, _ in pairs], "mean": [v for _, v in pairs]} if len(pairs) >= 2 else None

    found = study.crossings(as_curve(alternating), as_curve(end_to_end))
    return [{"step": round(c["step"]), "ahead_after": c["ahead_after"]} for c in found]


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


TABLE_HEAD = (
    "| stage | steps | train CPU s | eval CPU s | wall s | step ms | mAP | mAP@0.5 | AR@100 "
    "| recall@300 IoU.7 | frozen audit |"
)


def _row(label: str, row: dict, audit: str) -> str:
    cells = [label, row["steps"], _fmt(row["train_cpu_seconds"], 1), _fmt(row["eval_cpu_seconds"], 1)]
    cells += [_fmt(row["wall_seconds"], 1), _fmt(row.get("step_time_ms_median"), 1)]
    cells += [row[k] for k in METRIC_KEYS] + [audit]
    return "| " + " | ".join(_fmt(c) for c in cells) + " |"


def markdown(data: dict) -> str:
    lines = [TABLE_HEAD, "|" + "---|" * 11]
    lines += [_row(name, row, row["frozen_audit"]) for name, row in data["stages"].items()]
    lines += [_row(f"**{m} total**", data[m], "") for m in METHODS]
    v = data["verdicts"]
    lines += ["", "**At equal steps.** " + v["equal_steps"]]
    lines += ["", "**At equal training CPU time.** " + " ".join(v["equal_cpu"] or ["no comparable point."])]
    if v["crossings"]:
        text = "; ".join(f"step {c['step']} ({c['ahead_after']} ahead after it)" for c in v["crossings"])
        lines += ["", f"**Crossing points** of the {VERDICT_METRIC} curves against cumulative steps: {text}."]
    if v["time"]:
        lines += ["", v["time"]]
    lines += [
        "",
        "| context (paper / reference implementation) | unshared / baseline | result |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in data["paper_context"]],
    ]
    return "\n".join(lines)


def _plot_curves(ax, data: dict, x: str, xlabel: str) -> None:
    for method, style in (("alternating", "o-"), ("end_to_end", "k^--")):
        points = [(p[x], p[VERDICT_METRIC]) for p in data["curves"][method] if p[VERDICT_METRIC] is not None]
        if points:
            ax.plot(*zip(*points, strict=True), style, label=method, markersize=4)
    ax.set(xlabel=xlabel, ylabel=f"val {VERDICT_METRIC}", title=f"{VERDICT_METRIC} against {xlabel}")
    ax.legend(fontsize=7)


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
    if axes[0].lines:
        axes[0].legend(fontsize=7)
    _plot_curves(axes[1], data, "step", "cumulative steps")
    _plot_curves(axes[2], data, "train_cpu_seconds", "cumulative training CPU seconds")
    names = [*stages, "end_to_end"]
    train = [data["stages"][n]["train_cpu_seconds"] or 0.0 for n in names]
    evals = [data["stages"][n]["eval_cpu_seconds"] or 0.0 for n in names]
    axes[3].bar(names, train, color=["C0"] * len(stages) + ["k"], label="training")
    axes[3].bar(names, evals, bottom=train, color="C1", alpha=0.6, label="evaluation")
    axes[3].plot(
        names, [data["stages"][n]["wall_seconds"] for n in names], "rx", label="wall s (whole stage)"
    )
    axes[3].set(ylabel="seconds", title="CPU seconds per stage")
    axes[3].legend(fontsize=7)
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
