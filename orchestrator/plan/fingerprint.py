"""Stage fingerprints: what a finished stage depends on, computed from the config alone.

A stage's fingerprint hashes its spec, steps and LR, the model settings and base
pipeline.config text, the data's content fingerprint, the backbone checkpoint's identity, the
seed and strategy, the version of the code that decides what a stage trains, and (recursively)
its input stages' fingerprints. It needs no model and no checkpoint, so it is known for every
stage before anything runs: a finished stage is skipped when its ``DONE`` carries the same
fingerprint, and a stage whose input was finished under another fingerprint is refused before
anything is touched.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path

from orchestrator.layout import fingerprint
from orchestrator.plan.stage_plan import StagePlan
from stages.cache import parts as cache_parts
from stages.spec import CacheMode, Config

ROOT = Path(__file__).resolve().parents[2]
# The code that changes what a stage trains (or measures). Not here: the chain, the run layout,
# reports, TensorBoard layout, export, predict and the CLI, so editing them retrains nothing.
TRAINING_CODE: tuple[str, ...] = (
    "stages",
    "orchestrator/odapi",
    "orchestrator/engine",
    "orchestrator/data",
    "orchestrator/plan",
    "orchestrator/compat.py",  # how TensorFlow, tf-slim and the OD API are adapted to the stack
)


def code_version_of(root: Path, folders: tuple[str, ...]) -> str:
    """Hash of every ``.py`` file under ``folders`` (recursively; an entry may be one file), by
    relative path and bytes."""
    digest = hashlib.sha256()
    for folder in folders:
        entry = root / folder
        for path in [entry] if entry.is_file() else sorted(entry.rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


@functools.cache
def code_version() -> str:
    return code_version_of(ROOT, TRAINING_CODE)


@dataclasses.dataclass(frozen=True)
class RunIdentity:
    """What every stage of a run shares, as identities rather than paths."""

    data: str  # content fingerprint of the validated dataset
    backbone: str | None  # checkpoint id of the backbone, or the pre-training cache key
    base_pipeline: str  # text of the base pipeline.config
    code: str


def stage_fingerprints(cfg: Config, plans: dict[str, StagePlan], run: RunIdentity) -> dict[str, str]:
    """Stage name -> fingerprint, in run order (an input's fingerprint feeds its consumers)."""
    model = dataclasses.asdict(cfg.model) | {"pipeline_config": None}  # its text is in base_pipeline
    shared = {
        "model": model,
        "base_pipeline": run.base_pipeline,
        "data": run.data,
        "bad_boxes": cfg.data.bad_boxes,
        "backbone": run.backbone,
        "strategy": str(cfg.train.strategy),
        "code": run.code,
    }
    out: dict[str, str] = {}
    approximate = _approximate_cache(cfg)
    for name, plan in plans.items():
        parts = {
            **shared,
            "spec": dataclasses.asdict(plan.spec),
            "steps": plan.steps,
            "lr": plan.lr,
            "seed": plan.seed,
            "inputs": {i: out[i] for i in plan.inputs},
        }
        if approximate and cache_parts(plan.spec):
            parts["cache"] = approximate
        out[name] = fingerprint(parts)
    return out


def _approximate_cache(cfg: Config) -> dict:
    """Cache settings that change what a stage learns (not only how fast): they are part of the
    fingerprint of a stage that caches. Exact caching (``auto``) and ``off`` train alike, so a
    stage trained either way is reused by the other."""
    out = {"mode": "force"} if cfg.cache.mode == CacheMode.force else {}
    return out | ({"float16": True} if cfg.cache.float16 else {})
