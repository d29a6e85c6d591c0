"""Hydra callback for ``-m`` sweeps: per-job status, sweep_summary.{md,csv}, TensorBoard HParams.

Registered in ``conf/config.yaml`` (``hydra.callbacks.sweep_summary``). The summary is
rewritten after every job (under a file lock: joblib workers share the sweep dir) because
Hydra's basic sweeper raises on a failed job before ``on_multirun_end`` runs; this way a
failed job is reported with its error and the other jobs' rows are still there.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from orchestrator.layout import file_lock

METRICS = ("alternating/mAP", "alternating/mAP@0.5", "end_to_end/mAP", "end_to_end/mAP@0.5")
COLUMNS = ("job", "overrides", "status", "error", "wall_s", *METRICS)


def _final_metrics(job_dir: Path) -> dict[str, float | None]:
    path = job_dir / "comparison" / "comparison.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    return {m: data.get(m.split("/")[0], {}).get(m.split("/")[1]) for m in METRICS}


def job_row(job_dir: Path) -> dict[str, Any]:
    status = json.loads((job_dir / "job_status.json").read_text())
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    return {"job": job_dir.name, "overrides": " ".join(overrides), **status, **_final_metrics(job_dir)}


def write_summary(sweep_dir: Path) -> list[dict]:
    rows = [
        job_row(d)
        for d in sorted(sweep_dir.iterdir(), key=lambda p: p.name)
        if (d / "job_status.json").exists()
    ]
    with open(sweep_dir / "sweep_summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    fmt = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(r.get(c)).replace("|", "/") for c in COLUMNS) + " |" for r in rows]
    (sweep_dir / "sweep_summary.md").write_text(f"# Sweep {sweep_dir}\n\n" + "\n".join(lines) + "\n")
    write_hparams_config(sweep_dir, rows)
    return rows


def _parse_overrides(text: str) -> dict[str, str]:
    return dict(o.split("=", 1) for o in text.split() if "=" in o)


def write_hparams_config(sweep_dir: Path, rows: list[dict]) -> None:
    """``hp.hparams_config`` at the sweep root: every swept key, the four final metrics."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    values: dict[str, set] = {}
    for row in rows:
        for key, value in _parse_overrides(row["overrides"]).items():
            values.setdefault(key, set()).add(value)
    hparams = [hp.HParam(k, hp.Discrete(sorted(v))) for k, v in sorted(values.items())]
    metrics = [hp.Metric(m, display_name=m) for m in METRICS]
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


class SweepSummary(Callback):
    """Writes job_status.json per job and the sweep summary (multirun only)."""

    def __init__(self) -> None:
        self._started = time.time()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.time()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        failed = job_return.status != JobStatus.COMPLETED
        status = {
            "status": "failed" if failed else "completed",
            "error": f"{type(job_return._return_value).__name__}: {job_return._return_value}"
            if failed
            else "",
            "wall_s": round(time.time() - self._started, 1),
        }
        (job_dir / "job_status.json").write_text(json.dumps(status, indent=2))
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
