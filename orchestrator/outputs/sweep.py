"""Hydra callback for ``-m`` sweeps: per-job status, sweep_summary.{md,csv}, TensorBoard HParams.

Registered in ``conf/config.yaml`` (``hydra.callbacks.sweep_summary``). The summary is
rewritten after every job (under a file lock: joblib workers share the sweep dir) because
Hydra's basic sweeper raises on a failed job before ``on_multirun_end`` runs; this way a
failed job is reported with its error and the other jobs' rows are still there.

With the summary, the seed study (:mod:`orchestrator.outputs.study`: jobs that differ only
in ``seed``, mean and 95% CI per method, paired difference) is rewritten too: its groups
are a second table in sweep_summary.md, ``sweep_summary_groups.csv`` (one row per group;
sweep_summary.csv keeps one row per job, with the job's ``group``), and one HParams
session per group under ``<sweep>/study/<group>/`` with the mean metrics.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from orchestrator import cluster
from orchestrator.layout import file_lock, write_json
from orchestrator.outputs import study

log = logging.getLogger(__name__)

METRICS = ("alternating/mAP", "alternating/mAP@0.5", "end_to_end/mAP", "end_to_end/mAP@0.5")
COLUMNS = ("job", "overrides", "status", "error", "wall_s", *METRICS)
CSV_COLUMNS = (*COLUMNS, "group")
# Group sessions' extra HParams metrics (besides METRICS, which hold the group means).
STUDY_METRICS = tuple(f"diff/{k}{s}" for k in study.FINAL_METRICS for s in ("", "_ci_low", "_ci_high", "_n"))
MEAN_SEED = "mean"  # the ``seed`` hparam of a group session: the mean over the seeds


def _final_metrics(job_dir: Path) -> dict[str, float | None]:
    path = job_dir / "comparison" / "comparison.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    return {m: data.get(m.split("/")[0], {}).get(m.split("/")[1]) for m in METRICS}


def job_row(job_dir: Path) -> dict[str, Any]:
    status = json.loads((job_dir / "job_status.json").read_text())
    overrides = study.job_overrides(job_dir)
    return {
        "job": job_dir.name,
        "overrides": " ".join(overrides),
        **status,
        **_final_metrics(job_dir),
        "group": study.group_id(study.group_key(overrides)),
    }


def study_groups(sweep_dir: Path, rows: list[dict]) -> list[dict]:
    """Rewrite the seed study and return its groups; [] when no job has a comparison yet.

    A failure here is logged, not raised: the per-job summary matters more than the study.
    """
    if not any((sweep_dir / r["job"] / "comparison" / "comparison.json").exists() for r in rows):
        return []
    try:
        return study.write_study(sweep_dir)["groups"]
    except Exception:
        log.exception("The seed study of %s failed; the sweep summary is written without it", sweep_dir)
        return []


def _groups_markdown(groups: list[dict]) -> list[str]:
    """The second table of sweep_summary.md: one row per group of seeds."""
    head = ["group (overrides without seed)", "jobs", "seeds"]
    head += [f"{m} {k}" for m in study.METHODS for k in study.FINAL_METRICS]
    head += [f"diff {k}" for k in study.FINAL_METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        cells = [" ".join(g["overrides"]) or "-", " ".join(g["jobs"]), " ".join(s or "-" for s in g["seeds"])]
        cells += [study.fmt_mean_ci(g["methods"][m][k]) for m in study.METHODS for k in study.FINAL_METRICS]
        cells += [study.fmt_mean_ci(g["paired_difference"][k]) for k in study.FINAL_METRICS]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return [
        "",
        f"## Seed groups: mean [{study.CONFIDENCE:.0%} CI]; diff = alternating minus end_to_end, paired by seed",
        "",
        *lines,
        "",
        "Verdicts, spread, costs and curves per group: study/report.md.",
    ]


def _write_csv(path: Path, columns: list[str] | tuple[str, ...], rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_summary(sweep_dir: Path, hparams: bool = True) -> list[dict]:
    """sweep_summary.{md,csv} (one row per job), the seed study and its group aggregates."""
    rows = [job_row(d) for d in study.job_dirs(sweep_dir) if (d / "job_status.json").exists()]
    groups = study_groups(sweep_dir, rows)
    _write_csv(sweep_dir / "sweep_summary.csv", CSV_COLUMNS, rows)
    fmt = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(r.get(c)).replace("|", "/") for c in COLUMNS) + " |" for r in rows]
    if groups:
        lines += _groups_markdown(groups)
        flat = [study.flat_group_row(g) for g in groups]
        _write_csv(sweep_dir / "sweep_summary_groups.csv", list(flat[0]), flat)
    (sweep_dir / "sweep_summary.md").write_text(f"# Sweep {sweep_dir}\n\n" + "\n".join(lines) + "\n")
    if hparams:
        write_hparams_config(sweep_dir, rows, with_groups=bool(groups))
        write_group_hparams(
            sweep_dir, groups, seed_swept=any(study.seed_of(r["overrides"].split()) for r in rows)
        )
    return rows


def _parse_overrides(text: str) -> dict[str, str]:
    return dict(o.split("=", 1) for o in text.split() if "=" in o)


def write_hparams_config(sweep_dir: Path, rows: list[dict], with_groups: bool = False) -> None:
    """``hp.hparams_config`` at the sweep root: every swept key, the four final metrics.

    ``with_groups``: the seed-group sessions' extra metrics and ``seed=mean`` are declared too.
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    values: dict[str, set] = {}
    for row in rows:
        for key, value in _parse_overrides(row["overrides"]).items():
            values.setdefault(key, set()).add(value)
    if with_groups and study.SEED_KEY in values:
        values[study.SEED_KEY].add(MEAN_SEED)
    hparams = [hp.HParam(k, hp.Discrete(sorted(v))) for k, v in sorted(values.items())]
    metrics = [hp.Metric(m, display_name=m) for m in (*METRICS, *(STUDY_METRICS if with_groups else ()))]
    with tf.summary.create_file_writer(str(sweep_dir)).as_default():
        hp.hparams_config(hparams=hparams, metrics=metrics)


def write_job_hparams(job_dir: Path, trial_id: str, overrides: dict[str, str]) -> None:
    """``hp.hparams`` and the final metrics in ``<job>/hparams`` (one HParams session)."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    with tf.summary.create_file_writer(str(job_dir / "hparams")).as_default():
        hp.hparams(overrides, trial_id=trial_id)
        for name, value in _final_metrics(job_dir).items():
            if value is not None:
                tf.summary.scalar(name, value, step=0)


def write_group_hparams(sweep_dir: Path, groups: list[dict], seed_swept: bool) -> None:
    """One HParams session per seed group in ``<sweep>/study/<group>/``: group means, paired diff.

    The means use the jobs' metric names, so HParams shows them in the same columns as the
    single jobs, with ``seed=mean``. Old event files are removed first: the session is
    rewritten after every job, and TensorBoard would otherwise see stale duplicates.
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    for group in groups:
        directory = sweep_dir / "study" / group["group_id"]
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("events.out.tfevents.*"):
            old.unlink()
        row = study.flat_group_row(group)
        params = _parse_overrides(row["overrides"]) | ({study.SEED_KEY: MEAN_SEED} if seed_swept else {})
        writer = tf.summary.create_file_writer(str(directory))
        with writer.as_default():
            hp.hparams(params, trial_id=f"{sweep_dir.name}/study/{group['group_id']}")
            for name in (*METRICS, *STUDY_METRICS):
                if row.get(name) is not None:
                    tf.summary.scalar(name, row[name], step=0)
        writer.close()


class SweepSummary(Callback):
    """Writes job_status.json per job and the sweep summary (multirun only)."""

    def __init__(self) -> None:
        self._started = time.time()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.time()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN or cluster.is_follower():
            return  # a multi-worker job's other workers leave its status to the chief
        job_dir = Path(config.hydra.runtime.output_dir)
        failed = job_return.status != JobStatus.COMPLETED
        status = {
            "status": "failed" if failed else "completed",
            "error": f"{type(job_return._return_value).__name__}: {job_return._return_value}"
            if failed
            else "",
            "wall_s": round(time.time() - self._started, 1),
        }
        write_json(job_dir / "job_status.json", status)  # atomic: other workers' summaries read it
        sweep_dir = Path(config.hydra.sweep.dir)
        trial = f"{sweep_dir.name}/{config.hydra.job.num}"
        write_job_hparams(
            job_dir, trial, dict(o.split("=", 1) for o in config.hydra.overrides.task if "=" in o)
        )
        with file_lock(sweep_dir / ".summary.lock"):
            write_summary(sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            with file_lock(sweep_dir / ".summary.lock"):
                write_summary(sweep_dir)
