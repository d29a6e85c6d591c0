"""``python -m bench --only evidence --sweep DIR``: the evidence behind the defaults, from a sweep.

The study itself is a Hydra sweep (hours at the default budget; rerun the same command to resume
it: finished stages come from its stage store), for example::

    python -m orchestrator -m stage=all seed=0,1,2 data=shapes,glyphs \\
        budget=equal,detector_heavy,paper stages.end_to_end.lr=null,0.01 hydra.sweep.dir=DIR

A candidate thought of later joins the same directory, so that it reuses the stages it shares
(end_to_end, here) from the sweep's stage store: the same command with its own values plus
``hydra.sweep.dir=DIR 'hydra.sweep.subdir=NAME-seed${seed}-${data.kind}'``.

This reads its finished jobs (:func:`orchestrator.outputs.study.read_job`), compares each
method's candidates (:mod:`orchestrator.outputs.evidence`) against the defaults the config
composes to, and renders the BENCHMARKS.md section. A partial sweep gives a partial table.
"""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path

from omegaconf import OmegaConf

from orchestrator.outputs import evidence, study
from orchestrator.outputs.study import fmt, fmt_mean_ci


def defaults() -> dict[str, str]:
    """The settings a plain ``stage=all`` uses, spelt as the sweep's overrides would spell them.

    Every key a candidate can set (:data:`orchestrator.outputs.evidence.METHOD_KEYS`), so that a
    study that spells each candidate out in full (``stages.s1_rpn.lr=0.02,0.04``) keeps its labels
    whichever of them ``conf/`` makes the default.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from orchestrator.resources import CONF_DIR
    from stages.spec import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config")
    keys = dict.fromkeys(k for method in evidence.METHOD_KEYS.values() for k in method)
    return {key: _spelt(cfg.budget.name if key == "budget" else OmegaConf.select(cfg, key)) for key in keys}


def _spelt(value: object) -> str:
    """A config value as a command-line override spells it: null, 0.02, cosine, [1,1,1,1]."""
    if value is None:
        return "null"
    if isinstance(value, Enum):
        return value.name
    if OmegaConf.is_list(value) or isinstance(value, list):  # budget.split: [1,3,1,1], not [1.0,...]
        return "[" + ",".join(_spelt(int(v) if float(v).is_integer() else v) for v in value) + "]"
    return str(value)


def spanned(jobs: list[dict]) -> str:
    """The overrides the jobs span, as one ``-m`` command would spell them (``key=a,b``).

    Read from the jobs, not from ``multirun.yaml``: a later candidate can be swept into the same
    directory (its own ``hydra.sweep.subdir``) to share the stage store, and each ``-m`` command
    rewrites ``multirun.yaml``.
    """
    values: dict[str, list[str]] = {}
    for job in jobs:
        for override in job["overrides"]:
            key, _, value = override.partition("=")
            if value not in values.setdefault(key, []):
                values[key].append(value)
    return " ".join(f"{key}={','.join(vals)}" for key, vals in values.items())


def collect(sweep_dirs: list[Path]) -> dict:
    """The evidence of one or more sweep directories (one per dataset, say, run side by side), with
    the settings each one's jobs span and when they ran."""
    jobs, commands, stamps = [], [], set()
    for sweep_dir in sweep_dirs:
        dirs = study.job_dirs(sweep_dir)
        found = [study.read_job(d) for d in dirs]
        jobs += found
        commands.append("python -m orchestrator -m " + spanned(found))
        finished = [d / "job_status.json" for d in dirs if (d / "job_status.json").exists()]
        stamps |= {time.strftime("%Y-%m-%d", time.gmtime(p.stat().st_mtime)) for p in finished}
    settings = defaults()
    return {
        "sweeps": [str(d) for d in sweep_dirs],
        "commands": commands,
        "jobs": {"used": sum(j["state"] == "used" for j in jobs), "all": len(jobs)},
        "dates": sorted(stamps),
        "defaults": settings,
        **evidence.analyse(jobs, settings),
    }


def _shown(c: dict, shared: set[str], otherwise: str) -> str:
    """A candidate's setting without the overrides all its method's candidates share."""
    return " ".join(o for o in c["setting"].split() if o not in shared) or otherwise


def _row(method: str, c: dict, shared: set[str]) -> str:
    mark = " (default)" if c["default"] else ""
    shown = _shown(c, shared, "(as below)")
    by_seed = " / ".join(fmt(v) for v in c["by_seed"].values())
    cpu = c["train_cpu_seconds"]["mean"]
    return (
        f"| {method} | {shown}{mark} | {len(c['seeds'])} | {fmt_mean_ci(c['mAP@0.5'])} | {by_seed} | "
        f"{fmt_mean_ci(c['mAP'])} | {fmt(cpu, 0)} |"
    )


def _shared(m: dict) -> set[str]:
    """The overrides every candidate of a method sets alike: said once under the table."""
    settings = [set(c["setting"].split()) for c in m["candidates"]]
    return set.intersection(*settings) if len(settings) > 1 else set()


def _verdict(method: str, m: dict) -> str:
    gap = m["default_minus_best"]
    if m["default"] == m["best"]:
        return f"* {method}: the default ({m['default']}) is the best candidate."
    if gap is None:
        return f"* {method}: best {m['best']}; the default has no finished seeds yet."
    noise = {True: "within noise", False: "**outside noise**", None: "undecided (one seed)"}[
        m["within_noise"]
    ]
    return (
        f"* {method}: best {m['best']}; default - best = {fmt_mean_ci(gap)} mAP@0.5 "
        f"(paired over {gap['n']} seed{'s' if gap['n'] != 1 else ''}): {noise}."
    )


PLOT = "docs/defaults_evidence.png"  # relative to the repository root, linked from BENCHMARKS.md


def plot(ev: dict, path: Path) -> None:
    """One panel per dataset: each candidate's mean mAP@0.5 with its 95% interval and its seeds
    as dots, the defaults in bold; end_to_end in orange, alternating in blue as in the reports."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    contexts = list(ev["contexts"].items())
    fig, axes = plt.subplots(1, len(contexts), figsize=(7.5 * len(contexts), 3.4), squeeze=False)
    for ax, (context, methods) in zip(axes[0], contexts, strict=True):
        labels = []
        for method, color in (("alternating", "C0"), ("end_to_end", "C1")):
            m = methods.get(method, {"candidates": []})
            shared = _shared(m)
            for c in m["candidates"]:
                y, stats = len(labels), c["mAP@0.5"]
                shown = _shown(c, shared, c["setting"])
                labels.append(f"{method}: {shown}{' (default)' if c['default'] else ''}")
                seeds = [v for v in c["by_seed"].values() if v is not None]
                ax.plot(seeds, [y] * len(seeds), "o", color=color, alpha=0.45, markersize=4)
                if stats["mean"] is not None:
                    low, high = stats["low"], stats["high"]
                    err = [[stats["mean"] - low], [high - stats["mean"]]] if low is not None else None
                    ax.errorbar(stats["mean"], y, xerr=err, fmt="s", color=color, capsize=3)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        for tick, label in zip(ax.get_yticklabels(), labels, strict=True):
            tick.set_fontweight("bold" if label.endswith("(default)") else "normal")
        ax.invert_yaxis()
        ax.set(xlabel="val mAP@0.5: mean, 95% CI, seeds", title=context)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def section(results: dict) -> list[str]:
    """The BENCHMARKS.md section: one table per dataset, then each method's verdict."""
    if "evidence" not in results:
        return [
            "The defaults' evidence: `python -m bench --only evidence --sweep DIR` (see bench/evidence.py).",
            "",
        ]
    ev, m = results["evidence"], results["machine"]
    pct = f"{round(ev['confidence'] * 100)}%"
    lines = [
        "## Defaults on evidence: each method's candidates at the default total budget",
        "",
        "The settings the jobs span (candidates added later join a sweep directory under their own "
        f"subdirectory, so not every combination ran): {' and '.join(f'`{c}`' for c in ev['commands'])} "
        f"({ev['jobs']['used']} of {ev['jobs']['all']} jobs finished; "
        f"{m['cores']} cores, TensorFlow {m['tensorflow']}, {', '.join(ev['dates'])}). mAP@0.5 and mAP: mean "
        f"[{pct} interval, Student t] over seeds; CPU: the method's training CPU seconds (mean). Each "
        "method's candidates change its own stages only, so a (candidate, seed) counts once.",
        "",
    ]
    for context, methods in ev["contexts"].items():
        lines += [
            f"### {context}",
            "",
            f"| method | setting | seeds | mAP@0.5 [{pct}] | mAP@0.5 by seed | mAP [{pct}] | CPU s |",
        ]
        lines.append("|---|---|---|---|---|---|---|")
        shared = {name: _shared(mm) for name, mm in methods.items()}
        lines += [_row(name, c, shared[name]) for name, mm in methods.items() for c in mm["candidates"]]
        common = [f"{name}: {' '.join(sorted(same))}" for name, same in shared.items() if same]
        if common:
            lines += ["", "Every row of a method also sets " + "; ".join(common) + "."]
        lines += ["", *(_verdict(name, mm) for name, mm in methods.items()), ""]
    return [*lines, f"![Each candidate's final mAP@0.5 per dataset, seeds as dots]({PLOT})", ""]
