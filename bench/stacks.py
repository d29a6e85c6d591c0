"""The two supported stacks side by side: step time and the default run's verdict on each.

Both stacks run from this checkout: ``legacy`` is the interpreter running the bench (``.venv``),
``current`` another environment made by ``scripts/setup.sh`` (``.venv-current``, or
``--other-python``). Same machine, same generated pipeline.config, same data:

1. our end_to_end step (``bench.cases.ours``), tiny and resnet50 at 128 px, batch 2, the stacks
   in alternation (A B A B), ratio current/legacy per pair;
2. the default ``stage=all`` (both methods, every default) once per stack, each in its own process:
   final mAP@0.5 of each method and its training CPU seconds, from ``comparison/comparison.json``.

The stage=all runs come first and the step pairs last, so the step figures are not measured next
to a long job that started before them.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from bench.processes import run_case, spawn


def describe(python: str) -> dict:
    """Python and TensorFlow versions of one stack's interpreter (imported as the tool imports it)."""
    code = (
        "import orchestrator, platform, json, tensorflow as tf; "
        "print(json.dumps({'python': platform.python_version(), 'tensorflow': tf.__version__}))"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def step_pairs(
    stacks: dict[str, str], env: dict, pipeline_for: Callable[[str], str], quick: bool
) -> list[dict]:
    rows = []
    for model, steps in (("tiny", 40 if quick else 200), ("resnet50", 4 if quick else 12)):
        pipeline = pipeline_for(model)
        for repeat in range(1 if quick else 2):
            pair = {
                name: run_case("ours", env, python, pipeline=pipeline, steps=steps)
                for name, python in stacks.items()
            }
            ratio = pair["current"]["step_ms"] / pair["legacy"]["step_ms"]
            rows.append({"model": model, "steps": steps, "repeat": repeat, **pair, "ratio": round(ratio, 3)})
            print(f"stacks {model} #{repeat}: " + ", ".join(f"{k} {v['step_ms']:.1f} ms" for k, v in pair.items()),
                  flush=True)  # fmt: skip
    return rows


def default_run(python: str, env: dict, run_dir: Path, extra: list[str]) -> dict:
    """``stage=all`` at every default (plus ``extra`` for a quick smoke run) on one stack."""
    args = [python, "-m", "orchestrator", "stage=all", f"hydra.run.dir={run_dir}", *extra]
    finished = spawn(args, env).check(" ".join(args[1:]))
    comparison = json.loads((run_dir / "comparison" / "comparison.json").read_text())
    figures = ("steps", "mAP", "mAP@0.5", "train_cpu_seconds")
    return {
        "process_wall_s": round(finished.wall_s, 1),
        **{
            method: {k: comparison[method].get(k) for k in figures}
            for method in ("alternating", "end_to_end")
        },
    }


def run_all(tmp: Path, env: dict, quick: bool, other_python: str, pipeline_for: Callable[[str], str]) -> dict:
    import sys

    described = {python: describe(python) for python in (sys.executable, other_python)}
    stacks = {("legacy" if d["python"].startswith("3.11.") else "current"): p for p, d in described.items()}
    if len(stacks) != 2:
        raise SystemExit(f"--other-python {other_python} is the same stack as {sys.executable}")
    stacks = {name: stacks[name] for name in ("legacy", "current")}
    described = {name: described[python] for name, python in stacks.items()}
    extra = ["steps=20", "data.num_train=64", "data.num_val=8", "backbone.pretrain_steps=50"] if quick else []
    defaults = {}
    for name, python in stacks.items():
        defaults[name] = default_run(python, env, tmp / f"default-{name}", extra)
        print(f"stacks default stage=all on {name}: {json.dumps(defaults[name])}", flush=True)
    return {
        "stacks": described,
        "default_run": defaults,
        "default_overrides": extra,
        "steps": step_pairs(stacks, env, pipeline_for, quick),
    }
