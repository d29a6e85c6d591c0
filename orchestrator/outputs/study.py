"""Seed study of a sweep: is alternating training really ahead of end-to-end, or is it noise?

A single run compares the two methods once; a difference of a few mAP points can be seed
noise. ``python -m orchestrator -m stage=all seed=0,1,2`` runs each configuration with
several seeds; this module groups the jobs that differ only in ``seed`` and, per group,
reports each method's mean, standard deviation and 95% confidence interval (Student t,
n-1 degrees of freedom), the paired difference (alternating minus end_to_end, same seed,
same job: pairing removes the seed's shared data/initialisation noise), the mean curves
with a 95% band, where the mean mAP@0.5 curves cross, and a verdict sentence.

Writes ``<sweep>/study/{report.md, study.json, curves.png}``. Reads only each job's
``.hydra/overrides.yaml``, ``job_status.json`` and ``comparison/comparison.json``, so it can
be rerun on any sweep directory, finished or not: failed jobs are skipped and counted, jobs
without a ``job_status.json`` are still running. Pure functions first (statistics,
grouping, curves, crossings), then the files. No TensorFlow here: the HParams view of the
aggregates is written by :mod:`orchestrator.outputs.sweep`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from orchestrator.layout import write_json

CONFIDENCE = 0.95
METHODS = ("alternating", "end_to_end")
FINAL_METRICS = ("mAP", "mAP@0.5")
COST_KEYS = ("steps", "train_cpu_seconds", "wall_seconds")
CURVE_METRICS = ("mAP@0.5", "mAP")
CROSSING_METRIC = "mAP@0.5"
SEED_KEY = "seed"

Stats = dict[str, Any]  # n, mean, sd, half_width, low, high (None where undefined)
Curve = list[tuple[float, float]]  # (cumulative step, value), steps increasing


# ---------------------------------------------------------------- statistics on floats


def _finite(values: Sequence[float | None]) -> list[float]:
    """Drop missing and non-finite values: a null or NaN mAP must not poison a mean."""
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student t quantile for ``n`` samples (n-1 dof): small seed counts need t, not 1.96."""
    from scipy.stats import t

    return float(t.ppf((1 + confidence) / 2, n - 1))


def summarize(values: Sequence[float | None], confidence: float = CONFIDENCE) -> Stats:
    """Mean, sd and CI of the mean; sd and CI are None below 2 values (never NaN)."""
    xs = _finite(values)
    stats: Stats = {"n": len(xs), "mean": None, "sd": None, "half_width": None, "low": None, "high": None}
    if not xs:
        return stats
    stats["mean"] = statistics.fmean(xs)
    if len(xs) >= 2:
        stats["sd"] = statistics.stdev(xs)
        stats["half_width"] = t_quantile(len(xs), confidence) * stats["sd"] / math.sqrt(len(xs))
        stats["low"] = stats["mean"] - stats["half_width"]
        stats["high"] = stats["mean"] + stats["half_width"]
    return stats


def paired_differences(a: Sequence[float | None], b: Sequence[float | None]) -> list[float]:
    """``a[i] - b[i]`` where both are known: one pair per job, i.e. per seed."""
    return [float(x) - float(y) for x, y in zip(a, b, strict=True) if len(_finite([x, y])) == 2]


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def verdict(metric: str, diff: Stats, confidence: float = CONFIDENCE) -> str:
    """One sentence: significant only when the paired interval excludes zero."""
    pct = f"{confidence:.0%}"
    if diff["n"] == 0:
        return f"{metric}: no job has both methods' {metric}, so there is nothing to compare."
    if diff["n"] == 1:
        return (
            f"{metric}: alternating minus end_to_end is {_signed(diff['mean'])} from a single seed: "
            f"no confidence interval, so no claim either way (run more seeds)."
        )
    interval = f"{pct} CI [{_signed(diff['low'])}, {_signed(diff['high'])}], n={diff['n']} seeds"
    if diff["low"] <= 0 <= diff["high"]:
        return (
            f"{metric}: no significant difference between alternating and end_to_end "
            f"(paired difference {_signed(diff['mean'])}, {interval})."
        )
    ahead, behind = ("alternating", "end_to_end") if diff["mean"] > 0 else ("end_to_end", "alternating")
    return (
        f"{metric}: {ahead} is ahead of {behind} by {abs(diff['mean']):.3f} "
        f"(paired difference alternating minus end_to_end {_signed(diff['mean'])}, {interval})."
    )


# ---------------------------------------------------------------- grouping


def override_key(override: str) -> str:
    """``+a.b=1`` -> ``a.b``: the config key an override sets."""
    return override.split("=", 1)[0].lstrip("+~")


def seed_of(overrides: Sequence[str]) -> str | None:
    """The ``seed=`` override's value, or None when the job did not set it."""
    values = [o.split("=", 1)[1] for o in overrides if "=" in o and override_key(o) == SEED_KEY]
    return values[-1] if values else None


def group_key(overrides: Sequence[str]) -> tuple[str, ...]:
    """The overrides minus ``seed``, sorted: jobs with the same key are seeds of one configuration."""
    return tuple(sorted(o for o in overrides if override_key(o) != SEED_KEY))


def group_id(key: Sequence[str]) -> str:
    """A stable, file-name-safe name for a group (a directory under ``study/``).

    Derived from the key alone, so it does not change as jobs finish in any order.
    """
    slug = re.sub(r"[^A-Za-z0-9.,_=-]+", "_", ",".join(key)) or "all"
    if len(slug) <= 80:
        return slug
    return f"{slug[:70]}-{hashlib.sha1(slug.encode()).hexdigest()[:8]}"


# ---------------------------------------------------------------- curves


def curve_points(points: Sequence[dict] | None, metric: str) -> Curve:
    """(step, value) of one method's curve, nulls skipped (RPN-only points have no mAP)."""
    by_step: dict[float, float] = {}
    for point in points or []:
        value, step = point.get(metric), point.get("step")
        if step is not None and _finite([value]):
            by_step[float(step)] = float(value)
    return sorted(by_step.items())


def mean_curve(curves: Sequence[Curve], confidence: float = CONFIDENCE) -> dict | None:
    """Pointwise mean and CI band of several seeds' curves, on the first curve's steps.

    Seeds of one configuration evaluate at the same steps; other curves are linearly
    interpolated onto the first one's steps (robust to small differences), and only steps
    inside every curve's range are kept, so nothing is extrapolated.
    """
    curves = [c for c in curves if c]
    if not curves:
        return None
    lo = max(c[0][0] for c in curves)
    hi = min(c[-1][0] for c in curves)
    steps = [s for s, _ in curves[0] if lo <= s <= hi]
    if not steps:
        return None
    grid = np.array([[np.interp(s, *zip(*c, strict=True)) for c in curves] for s in steps])
    stats = [summarize(row.tolist(), confidence) for row in grid]
    return {
        "n": len(curves),
        "step": steps,
        "mean": [s["mean"] for s in stats],
        "low": [s["low"] for s in stats],
        "high": [s["high"] for s in stats],
    }


def _interp(curve: dict, x: float) -> float:
    return float(np.interp(x, curve["step"], curve["mean"]))


def crossings(alternating: dict | None, end_to_end: dict | None) -> list[dict]:
    """Steps where the two mean curves cross (linear interpolation between points).

    Compared on the union of both curves' steps within their common range. Each crossing
    names the method ahead after it; a curve that only touches the other is no crossing.
    """
    if not alternating or not end_to_end:
        return []
    lo = max(alternating["step"][0], end_to_end["step"][0])
    hi = min(alternating["step"][-1], end_to_end["step"][-1])
    xs = sorted({x for x in (*alternating["step"], *end_to_end["step"]) if lo <= x <= hi})
    diff = [_interp(alternating, x) - _interp(end_to_end, x) for x in xs]
    found, prev = [], None
    for i, d in enumerate(diff):
        if d == 0:
            continue
        if prev is not None and (diff[prev] > 0) != (d > 0):
            x = (
                xs[prev] + (xs[i] - xs[prev]) * diff[prev] / (diff[prev] - d)
                if i == prev + 1
                else xs[prev + 1]
            )
            ahead = "alternating" if d > 0 else "end_to_end"
            found.append({"step": x, "value": _interp(alternating, x), "ahead_after": ahead})
        prev = i
    return found


# ---------------------------------------------------------------- jobs


def overrides_file(job_dir: Path) -> Path | None:
    """The job's Hydra overrides: those of the command that trained in it (``.hydra/``), or, in
    a job that trained nothing, those of its command (``.hydra/<command>/``: see
    ``orchestrator/cluster.py``, ``_hydra_subdir``); None for a directory that is not a job."""
    top = job_dir / ".hydra" / "overrides.yaml"
    if top.is_file():
        return top
    nested = sorted((job_dir / ".hydra").glob("*/overrides.yaml"))
    return nested[0] if nested else None


def job_overrides(job_dir: Path) -> list[str]:
    """The overrides of :func:`overrides_file`, as a list."""
    return list(yaml.safe_load(overrides_file(job_dir).read_text()) or [])


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Hydra job directories (they hold overrides, :func:`overrides_file`), in job-number order."""
    dirs = [d for d in sweep_dir.iterdir() if d.is_dir() and overrides_file(d) is not None]
    return sorted(dirs, key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))


def read_job(job_dir: Path) -> dict:
    """One job: overrides, state (used / skipped / running) and, if used, its comparison.

    ``skipped`` carries the reason: a failed job, or a finished one without a comparison
    (e.g. ``stage=plan``) or with an unreadable one.
    """
    overrides = job_overrides(job_dir)
    job = {"job": job_dir.name, "overrides": overrides, "seed": seed_of(overrides)}
    status_file, comparison = job_dir / "job_status.json", job_dir / "comparison" / "comparison.json"
    if not status_file.exists():  # its comparison.json may be half-written: do not read it
        return {**job, "state": "running"}
    try:
        status = json.loads(status_file.read_text())
        data = json.loads(comparison.read_text()) if comparison.exists() else None
    except (OSError, ValueError) as err:
        return {**job, "state": "skipped", "reason": f"unreadable: {err}"}
    if status.get("status") != "completed":
        return {**job, "state": "skipped", "reason": f"failed: {status.get('error') or 'no error recorded'}"}
    if not isinstance(data, dict):
        return {**job, "state": "skipped", "reason": "no comparison/comparison.json"}
    return {**job, "state": "used", "comparison": data}


def _final(job: dict, method: str, key: str) -> float | None:
    value = (job["comparison"].get(method) or {}).get(key)
    return value if isinstance(value, int | float) else None


def _group_curves(jobs: list[dict]) -> dict | None:
    """Mean curves per method and metric; None when no job has curves (older comparison.json)."""
    raw = [job["comparison"].get("curves") or {} for job in jobs]
    curves = {
        method: {m: mean_curve([curve_points(r.get(method), m) for r in raw]) for m in CURVE_METRICS}
        for method in METHODS
    }
    return curves if any(c for by_metric in curves.values() for c in by_metric.values()) else None


def analyse_group(key: tuple[str, ...], jobs: list[dict], confidence: float = CONFIDENCE) -> dict:
    """Everything the report says about one configuration's seeds."""
    methods = {
        method: {
            k: summarize([_final(j, method, k) for j in jobs], confidence) for k in FINAL_METRICS + COST_KEYS
        }
        for method in METHODS
    }
    diffs = {
        k: summarize(
            paired_differences(
                [_final(j, "alternating", k) for j in jobs], [_final(j, "end_to_end", k) for j in jobs]
            ),
            confidence,
        )
        for k in FINAL_METRICS
    }
    curves = _group_curves(jobs)
    cross = (
        crossings(curves["alternating"][CROSSING_METRIC], curves["end_to_end"][CROSSING_METRIC])
        if curves
        else None
    )
    return {
        "group_id": group_id(key),
        "overrides": list(key),
        "jobs": [j["job"] for j in jobs],
        "seeds": [j["seed"] for j in jobs],
        "methods": methods,
        "paired_difference": diffs,
        "verdicts": {k: verdict(k, diffs[k], confidence) for k in FINAL_METRICS},
        "curves": curves,
        "crossings": cross,
    }


def analyse(jobs: list[dict], confidence: float = CONFIDENCE) -> dict:
    """The whole study: groups of used jobs, and which jobs were skipped or still running."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for job in jobs:
        if job["state"] == "used":
            groups.setdefault(group_key(job["overrides"]), []).append(job)
    return {
        "confidence": confidence,
        "groups": [analyse_group(k, v, confidence) for k, v in sorted(groups.items())],
        "used": [j["job"] for j in jobs if j["state"] == "used"],
        "skipped": [{"job": j["job"], "reason": j["reason"]} for j in jobs if j["state"] == "skipped"],
        "running": [j["job"] for j in jobs if j["state"] == "running"],
    }


# ---------------------------------------------------------------- Markdown


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table; '-' where undefined, so the Markdown never shows NaN."""
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_ci(stats: Stats, digits: int = 3) -> str:
    if stats["low"] is None:
        return "-"
    return f"[{stats['low']:.{digits}f}, {stats['high']:.{digits}f}]"


def fmt_mean_ci(stats: Stats, digits: int = 3) -> str:
    """'mean [low, high]', or just the mean for a single seed."""
    ci = fmt_ci(stats, digits)
    return fmt(stats["mean"], digits) + ("" if ci == "-" else f" {ci}")


def _metric_table(group: dict, pct: str) -> list[str]:
    head = ["method", "n"] + [f"{k} {c}" for k in FINAL_METRICS for c in ("mean", "sd", f"{pct} CI")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, by_key in [*group["methods"].items(), ("alternating minus end_to_end (paired)", None)]:
        stats = [by_key[k] if by_key else group["paired_difference"][k] for k in FINAL_METRICS]
        mean = fmt if by_key else (lambda v: "-" if v is None else _signed(v))
        cells = [label, str(max(s["n"] for s in stats))]
        cells += [c for s in stats for c in (mean(s["mean"]), fmt(s["sd"]), fmt_ci(s))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def fmt_mean_sd(stats: Stats, digits: int) -> str:
    sd = "" if stats["sd"] is None else f" ± {stats['sd']:.{digits}f}"
    return fmt(stats["mean"], digits) + sd


def _cost_table(group: dict) -> list[str]:
    """Steps and seconds per method: equal steps is the comparison's premise, CPU time its price."""
    lines = [
        "| method | " + " | ".join(f"{k} (mean ± sd)" for k in COST_KEYS) + " |",
        "|---|" + "---|" * len(COST_KEYS),
    ]
    for method, by_key in group["methods"].items():
        cells = [fmt_mean_sd(by_key[k], 0 if k == "steps" else 1) for k in COST_KEYS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _crossing_sentence(group: dict) -> str:
    if group["crossings"] is None:
        return "No curves in these jobs' comparison.json (older format): no curve plot for this group."
    if not group["crossings"]:
        return f"The mean {CROSSING_METRIC} curves do not cross over the steps both methods evaluated."
    parts = [
        f"at step {c['step']:.0f} ({CROSSING_METRIC} {c['value']:.3f}; {c['ahead_after']} ahead after it)"
        for c in group["crossings"]
    ]
    return f"The mean {CROSSING_METRIC} curves (against cumulative steps) cross " + ", ".join(parts) + "."


def group_markdown(group: dict, confidence: float) -> list[str]:
    n = max(s["n"] for by_key in group["methods"].values() for s in by_key.values())
    seeds = ", ".join(s or "(default)" for s in group["seeds"])
    lines = [
        f"## Group `{' '.join(group['overrides']) or '(no overrides)'}`",
        "",
        f"Jobs {', '.join(group['jobs'])}; seeds {seeds}."
        + (" **Single seed: means only, no standard deviation or confidence interval.**" if n < 2 else ""),
    ]
    lines += ["", *_metric_table(group, f"{confidence:.0%}"), "", *_cost_table(group), ""]
    lines += [_crossing_sentence(group), "", "**Verdict.** " + " ".join(group["verdicts"].values()), ""]
    return lines


def markdown(study: dict, sweep_dir: Path) -> str:
    """report.md: a header saying which jobs count, then one section per group."""
    skipped = "; ".join(f"job {s['job']}: {s['reason']}" for s in study["skipped"])
    lines = [
        f"# Seed study: {sweep_dir}",
        "",
        f"{len(study['used'])} jobs used in {len(study['groups'])} groups; "
        f"{len(study['skipped'])} skipped{f' ({skipped})' if skipped else ''}; "
        f"{len(study['running'])} still running.",
        "",
        f"Jobs that differ only in `seed` form a group. Intervals: {study['confidence']:.0%} confidence "
        "interval of the mean, Student t with n-1 degrees of freedom. The difference is paired "
        "(alternating minus end_to_end within each job, i.e. each seed). Curves: curves.png "
        "(mean and confidence band at each point, against cumulative steps).",
        "",
    ]
    for group in study["groups"]:
        lines += group_markdown(group, study["confidence"])
    return "\n".join(lines)


# ---------------------------------------------------------------- plot and files


def _band(ax: Any, curve: dict, color: str, label: str) -> None:
    ax.plot(curve["step"], curve["mean"], "-o", color=color, markersize=3, label=f"{label} (n={curve['n']})")
    if curve["n"] >= 2:
        ax.fill_between(curve["step"], curve["low"], curve["high"], color=color, alpha=0.2)


def plot_curves(study: dict, path: Path) -> bool:
    """curves.png: one row per group with curves, one column per metric; False if nothing to plot."""
    groups = [g for g in study["groups"] if g["curves"]]
    if not groups:
        path.unlink(missing_ok=True)
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(groups), len(CURVE_METRICS), figsize=(11, 3.6 * len(groups)), squeeze=False)
    for row, group in zip(axes, groups, strict=True):
        for ax, metric in zip(row, CURVE_METRICS, strict=True):
            for method, color in zip(METHODS, ("C0", "C1"), strict=True):
                if group["curves"][method][metric]:
                    _band(ax, group["curves"][method][metric], color, method)
            if metric == CROSSING_METRIC:
                for c in group["crossings"] or []:
                    ax.axvline(c["step"], color="grey", linestyle="--", linewidth=1)
            ax.set(
                xlabel="cumulative steps", ylabel=f"val {metric}", title=f"{group['group_id'][:60]}: {metric}"
            )
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_study(sweep_dir: Path, confidence: float = CONFIDENCE) -> dict:
    """Write ``<sweep>/study/{report.md, study.json, curves.png}`` and return the study.

    Safe to call after every job (the caller holds the sweep's summary lock): it rereads
    every job directory and rewrites the files whole.
    """
    sweep_dir = Path(sweep_dir)
    study = analyse([read_job(d) for d in job_dirs(sweep_dir)], confidence)
    out = sweep_dir / "study"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "study.json", study)
    (out / "report.md").write_text(markdown(study, sweep_dir) + "\n")
    plot_curves(study, out / "curves.png")
    return study


def flat_group_row(group: dict) -> dict[str, Any]:
    """One flat row per group (sweep_summary_groups.csv, the HParams session): means, sd, CIs."""
    row: dict[str, Any] = {
        "group": group["group_id"],
        "overrides": " ".join(group["overrides"]),
        "jobs": " ".join(group["jobs"]),
        "seeds": " ".join(s or "-" for s in group["seeds"]),
    }
    for method in METHODS:
        for k in FINAL_METRICS:
            s = group["methods"][method][k]
            row |= {f"{method}/{k}": s["mean"], f"{method}/{k}_sd": s["sd"]}
            row |= {f"{method}/{k}_ci_low": s["low"], f"{method}/{k}_ci_high": s["high"]}
    for k in FINAL_METRICS:
        s = group["paired_difference"][k]
        row |= {f"diff/{k}": s["mean"], f"diff/{k}_ci_low": s["low"], f"diff/{k}_ci_high": s["high"]}
        row |= {f"diff/{k}_n": s["n"]}
    return row
