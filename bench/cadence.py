"""Our training loop as users run it against the stock loop as its users run it.

Whole processes, as a user would start them: ``python -m orchestrator stage=end_to_end`` at
our default cadence (checkpoints, logs, steps per compiled call) and the stock
``model_lib_v2.train_loop`` at ``model_main_tf2.py``'s defaults, on the same generated
pipeline.config (same learning-rate schedule, same backbone checkpoint, same data). Each runs
at two step counts and the per-step figure is the difference divided by the extra steps, so
start-up, tracing and the final checkpoint cancel out. Our final evaluation (the stock loop
has none) is taken out with the seconds ``metrics.json`` records for it.

The variants run in alternation (A B C, A B C, ...) so that a machine getting busier or
quieter touches all of them; per pair we report the ratio stock / ours of per-step wall time
(> 1: ours is faster) and of process CPU seconds per step, then the median and range.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.processes import spawn

MATCHED = ["train.checkpoint_every=1000", "train.log_every=100", "train.steps_per_loop=100"]


@dataclass(frozen=True)
class Model:
    """A model and the step counts whose difference gives the per-step figure."""

    name: str
    steps: tuple[int, int]
    pairs: int
    stock_per_iteration: int | None  # None: the stock default (100 steps per call)
    extra: tuple[str, ...] = ()


def _process(args: list[str], env: dict) -> dict:
    """Wall seconds and CPU seconds (user + system, all threads) of one child process."""
    run = spawn(args, env).check(" ".join(args[:4]) + " ...")
    return {"wall_s": run.wall_s, "cpu_s": run.cpu_s}


def _ours(run: Path, steps: int, model: Model, env: dict, cadence: list[str]) -> dict:
    from orchestrator.layout import StageFiles, stage_dir

    args = [sys.executable, "-m", "orchestrator", "stage=end_to_end", f"model={model.name}",
            f"stages.end_to_end.steps={steps}", f"hydra.run.dir={run}", *model.extra, *cadence]  # fmt: skip
    figures = _process(args, env)
    metrics = StageFiles(stage_dir(run, "end_to_end")).read_metrics()
    return {
        "wall_s": figures["wall_s"] - metrics["eval_seconds"],
        "cpu_s": figures["cpu_s"] - metrics["eval_cpu_seconds"],
    }


def _stock(config: Path, steps: int, model: Model, env: dict) -> dict:
    kwargs = {"pipeline": str(config), "steps": steps, "per_iteration": model.stock_per_iteration}
    return _process([sys.executable, "-m", "bench.cases", "stock_defaults", json.dumps(kwargs)], env)


def _plan(tmp: Path, model: Model, steps: int, env: dict) -> Path:
    """Our generated end_to_end pipeline.config for ``steps`` (the stock loop trains on it too)."""
    run = tmp / f"plan-{model.name}-{steps}"
    _process([sys.executable, "-m", "orchestrator", "stage=plan", f"model={model.name}",
              f"stages.end_to_end.steps={steps}", f"hydra.run.dir={run}", *model.extra], env)  # fmt: skip
    return run / "plan" / "end_to_end.config"


def _per_step(low: dict, high: dict, extra_steps: int) -> dict:
    return {k: round(1000 * (high[k] - low[k]) / extra_steps, 1) for k in ("wall_s", "cpu_s")}


def compare(tmp: Path, env: dict, model: Model, variants: dict[str, list[str] | None]) -> dict:
    """Variants in alternation; ``None`` marks the stock loop, a list our CLI with those overrides."""
    low, high = model.steps
    configs = {n: _plan(tmp, model, n, env) for n in model.steps}
    _ours(tmp / f"warm-{model.name}", low, model, env, [])  # builds the data and backbone caches
    rows: dict[str, list[dict]] = {name: [] for name in variants}
    for repeat in range(model.pairs):
        for name, cadence in variants.items():
            runs = {}
            for n in model.steps:
                if cadence is None:
                    runs[n] = _stock(configs[n], n, model, env)
                else:
                    runs[n] = _ours(tmp / f"{model.name}-{name}-{repeat}-{n}", n, model, env, cadence)
            rows[name].append(_per_step(runs[low], runs[high], high - low))
            print(f"cadence {model.name} #{repeat} {name}: {rows[name][-1]} ms/step", flush=True)
    return {"model": model.name, "steps": list(model.steps), "stock_per_iteration": model.stock_per_iteration,
            "variants": {n: " ".join(c) if c is not None else "stock" for n, c in variants.items()},
            "runs": rows, "ratios": _ratios(rows)}  # fmt: skip


def _ratios(rows: dict[str, list[dict]]) -> dict:
    """Per ours-variant: stock / ours per pair (same repeat), median and range."""
    stock = rows["stock"]
    out = {}
    for name, runs in rows.items():
        if name == "stock":
            continue
        summary = {}
        for key in ("wall_s", "cpu_s"):
            ratios = [s[key] / o[key] for s, o in zip(stock, runs, strict=True) if o[key] > 0]
            summary[key] = {"median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3),
                            "max": round(max(ratios), 3), "pairs": len(ratios)}  # fmt: skip
        out[name] = summary
    return out


def run_all(tmp: Path, env: dict, quick: bool) -> dict:
    """tiny at 100 and 400 steps (4 pairs); resnet50 at 10 and 30 steps (2 pairs)."""
    tiny = Model("tiny", (20, 60) if quick else (100, 400), 1 if quick else 4, None)
    small = ("data.num_val=8", "eval.max_images=8")
    resnet = Model("resnet50", (4, 8) if quick else (10, 30), 1 if quick else 2, 2 if quick else 10, small)
    started = time.strftime("%Y-%m-%d %H:%M")
    models = [compare(tmp, env, tiny, {"stock": None, "ours": [], "ours_matched": MATCHED}),
              compare(tmp, env, resnet, {"stock": None, "ours": []})]  # fmt: skip
    return {"started": started, "cores": os.cpu_count(), "quick": quick, "models": models}
