"""Anytime evaluation and CPU budgets: what a stage measured while it trained.

Every ``eval.every`` steps the training loop hands the live weights to the stage's
:class:`~orchestrator.engine.evaluate.Evaluator` (through a weights-only checkpoint outside
``checkpoints/``, so the stage's checkpoints are the same with evaluation on or off) and
records one point of the stage's curve: the step, the training CPU seconds spent so far, and
the metrics. Training and evaluation CPU seconds (process time: user + system, all threads)
are kept apart, so time verdicts are not inflated by evaluation or by other processes.

``progress.json`` keeps the curve and the training CPU seconds at each checkpoint, so a
resumed stage continues both from the checkpoint it resumed from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import tensorflow as tf

from orchestrator.engine.evaluate import write_eval_summaries
from orchestrator.layout import StageFiles, read_json, write_json

log = logging.getLogger(__name__)
Evaluate = Callable[[str], dict]  # a weights prefix -> metrics


class AnytimeCurve:
    """The stage's curve and CPU ledger; ``every=None`` or no evaluator: final point only."""

    def __init__(
        self, files: StageFiles, every: int | None, evaluate: Evaluate | None, step_offset: int, start: int
    ) -> None:
        self.files, self.every, self.evaluate, self.step_offset = files, every, evaluate, step_offset
        progress = read_json(files.progress) or {}
        cpu_at = {int(k): v for k, v in progress.get("cpu_at", {}).items()}
        self.cpu_at = {k: v for k, v in cpu_at.items() if k <= start}
        self.points = [p for p in progress.get("curve", []) if p["step"] <= start]
        self.train_cpu = self.cpu_at.get(start, 0.0)
        self.eval_cpu = progress.get("eval_cpu_seconds", 0.0) if start else 0.0
        if start and start not in cpu_at:
            log.warning("%s: no CPU-seconds record for step %d; counting from 0", files.directory.name, start)

    def train(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` (compiled training steps) and count its process CPU seconds as training."""
        before = time.process_time()
        try:
            return fn()
        finally:
            self.train_cpu += time.process_time() - before

    def due(self, step: int, final_step: int) -> bool:
        return bool(self.every and self.evaluate) and step % self.every == 0 and step < final_step

    def checkpointed(self, step: int) -> None:
        self.cpu_at[step] = round(self.train_cpu, 3)
        self._save()

    def evaluate_now(self, step: int, model) -> dict:
        """Evaluate the live weights at ``step``: one curve point, TensorBoard scalars."""
        before = time.process_time()
        prefix = tf.train.Checkpoint(model=model).write(str(self.files.eval_weights))
        metrics = self.evaluate(prefix)
        self.eval_cpu += time.process_time() - before
        point = self.add(step, metrics)
        write_eval_summaries(self.files.directory, metrics, self.step_offset + step)
        log.info("%s eval at step %d: %s", self.files.directory.name, step, _short(metrics))
        return point

    def add(self, step: int, metrics: dict) -> dict:
        point = {"step": step, "train_cpu_seconds": round(self.train_cpu, 2), **_floats(metrics)}
        self.points = [p for p in self.points if p["step"] != step] + [point]
        self._save()
        return point

    def _save(self) -> None:
        write_json(
            self.files.progress,
            {"cpu_at": self.cpu_at, "curve": self.points, "eval_cpu_seconds": round(self.eval_cpu, 3)},
        )

    def summary(self) -> dict:
        return {
            "train_cpu_seconds": round(self.train_cpu, 2),
            "eval_cpu_seconds": round(self.eval_cpu, 2),
            "curve": self.points,
        }


def _floats(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def _short(metrics: dict) -> dict:
    return {k: round(v, 4) for k, v in _floats(metrics).items()}
