"""Defaults on evidence: per method, which candidate setting is best, and is the default within noise?

A seed study (:mod:`orchestrator.outputs.study`) answers "alternating against end_to_end" for one
configuration. Choosing defaults asks another question, per method and dataset: among the
candidate settings a sweep tried (``budget=equal,paper,...`` for the alternating chain,
``stages.end_to_end.lr=...`` for the baseline), which reaches the best final mAP@0.5 at the same
total budget, and does the default reach it within noise? A method's candidates are the values
of the override keys that change *its* stages only; jobs that differ in the other method's keys
share this method's stages (the sweep's stage store trains them once), so each (candidate, seed)
counts once. "Within noise": the paired difference default - best over common seeds has a 95%
interval that reaches 0 (same seed, same data and backbone: pairing removes their shared noise).

Pure functions over the jobs :func:`orchestrator.outputs.study.read_job` returns; no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator.outputs.study import (
    CONFIDENCE,
    SEED_KEY,
    override_key,
    paired_differences,
    summarize,
)
from stages.spec import ALTERNATING_STAGES

METRIC = "mAP@0.5"
REPORTED = ("mAP@0.5", "mAP", "train_cpu_seconds")
# Which override keys change which method's stages (the rest, e.g. data, is the context).
STAGE_KEYS = ("lr", "lr_schedule", "warmup_steps", "steps")  # a stage's own schedule overrides
METHOD_KEYS: dict[str, tuple[str, ...]] = {
    "alternating": ("budget", "budget.split", "budget.total", "steps", "train.lr",
                    *(f"stages.{stage}.{key}" for stage in ALTERNATING_STAGES for key in STAGE_KEYS)),
    "end_to_end": (*(f"stages.end_to_end.{key}" for key in STAGE_KEYS), "budget.total", "steps", "train.lr"),
}  # fmt: skip
CONTEXT_KEYS = ("data", "model")


def _value(overrides: Sequence[str], key: str) -> str | None:
    for o in overrides:
        if override_key(o) == key:
            return o.split("=", 1)[1]
    return None


def setting(overrides: Sequence[str], keys: Sequence[str]) -> tuple[str, ...]:
    """The job's overrides among ``keys`` ("key=value"), in ``keys`` order; () is the default."""
    return tuple(f"{k}={v}" for k in keys if (v := _value(overrides, k)) is not None)


def resolved(settings: dict[str, str], fallback: dict[str, str]) -> dict[str, str]:
    """``stages.<s>.lr=null`` means ``train.lr``: spelt as the rate it resolves to (the candidate's own
    ``train.lr``, else ``fallback``'s), so ``stages.end_to_end.lr=0.02`` and ``=null`` at
    ``train.lr=0.02`` are the same candidate."""
    lr = settings.get("train.lr", fallback.get("train.lr", "null"))
    return {
        k: lr if v == "null" and k.startswith("stages.") and k.endswith(".lr") else v
        for k, v in settings.items()
    }


def is_default(candidate: Sequence[str], defaults: dict[str, str]) -> bool:
    """A candidate with only default values (``budget=equal``, ``...lr=null``) is the default."""
    spelt = resolved(dict(o.split("=", 1) for o in candidate), defaults)
    wanted = resolved(defaults, defaults)
    return all(wanted.get(k) == v for k, v in spelt.items())


def per_seed(jobs: list[dict], method: str) -> dict[tuple, dict[tuple, dict[str, dict]]]:
    """{context: {candidate: {seed: that method's comparison entry}}}, first job per seed wins."""
    keys = METHOD_KEYS[method]
    table: dict[tuple, dict[tuple, dict[str, dict]]] = {}
    for job in jobs:
        if job.get("state") != "used" or not job["comparison"].get(method):
            continue
        context = setting(job["overrides"], CONTEXT_KEYS)
        candidate = setting(job["overrides"], keys)
        seeds = table.setdefault(context, {}).setdefault(candidate, {})
        seeds.setdefault(job.get("seed") or "-", job["comparison"][method])
    return table


def _stats(runs: dict[str, dict], key: str, confidence: float) -> dict:
    values = [r.get(key) if isinstance(r.get(key), int | float) else None for r in runs.values()]
    return summarize(values, confidence)


def compare_candidates(
    candidates: dict[tuple, dict[str, dict]], defaults: dict[str, str], confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """One method on one dataset: each candidate's statistics, the best, and default - best."""
    rows = [
        {
            "setting": " ".join(c) or "(default)",
            "default": is_default(c, defaults),
            "seeds": sorted(runs),
            "by_seed": {seed: runs[seed].get(METRIC) for seed in sorted(runs)},
            **{k: _stats(runs, k, confidence) for k in REPORTED},
        }
        for c, runs in sorted(candidates.items())
    ]
    ranked = [r for r in rows if r[METRIC]["mean"] is not None]
    best = max(ranked, key=lambda r: r[METRIC]["mean"]) if ranked else None
    default = next((r for r in rows if r["default"]), None)
    gap = None
    if best and default:
        by_setting = {" ".join(c) or "(default)": runs for c, runs in candidates.items()}
        d_runs, b_runs = by_setting[default["setting"]], by_setting[best["setting"]]
        common = sorted(set(d_runs) & set(b_runs))
        gap = summarize(
            paired_differences(
                [d_runs[s].get(METRIC) for s in common], [b_runs[s].get(METRIC) for s in common]
            ),
            confidence,
        )
    return {
        "candidates": rows,
        "best": best["setting"] if best else None,
        "default": default["setting"] if default else None,
        "default_minus_best": gap,
        "within_noise": within_noise(default, best, gap),
    }


def within_noise(default: dict | None, best: dict | None, gap: dict | None) -> bool | None:
    """True: the default is the best, or its paired gap's interval reaches 0; None: unknown."""
    if default is None or best is None:
        return None
    if default["setting"] == best["setting"]:
        return True
    if gap is None or gap["high"] is None:
        return None
    return gap["high"] >= 0


def analyse(jobs: list[dict], defaults: dict[str, str], confidence: float = CONFIDENCE) -> dict:
    """Every (dataset, method) of the sweep: see :func:`compare_candidates`."""
    out: dict[str, dict] = {}
    for method in METHOD_KEYS:
        for context, candidates in sorted(per_seed(jobs, method).items()):
            name = " ".join(context) or "(default data)"
            out.setdefault(name, {})[method] = compare_candidates(candidates, defaults, confidence)
    return {"confidence": confidence, "seed_key": SEED_KEY, "contexts": out}
