"""Where a stage's cache lives: a directory named by what it was computed from, written atomically.

A cache is a directory ``<root>/<stage>-<key>/`` holding ``keys.npy`` (the image fingerprints,
:mod:`orchestrator.engine.cache_keys`: an image's fingerprint, or under
``cache.mode=force`` its record and flip), one ``.npy`` per output and ``meta.json``. It is
written as ``<name>.partial-<pid>`` and renamed into place when complete, so a directory with
the final name is always whole: a killed stage's next attempt reuses it, and a partial one
left by a dead process is removed and built again.

The key is a hash of everything the cached values depend on: the producer's frozen weights
(their bytes, not a checkpoint path), the data fingerprint, the code version, the input
pipeline and model config, the parts, the flip states and the stored dtype. So a sweep job
whose stage differs only in what is trained (a learning rate, a step count) reuses the cache
another job built, and anything that would change a cached value builds a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format

log = logging.getLogger(__name__)
FORMAT = 2  # bump when the layout or the meaning of an entry changes
KEYS, META = "keys.npy", "meta.json"
_HOST = socket.gethostname().replace("-", "_")  # partials are named <cache>.partial-<host>-<pid>


@dataclass(frozen=True)
class CacheContext:
    """What a run contributes to every cache key: its data and code."""

    root: Path  # <run>/cache, or <sweep root>/cache (shared by the sweep's jobs)
    data: str  # data fingerprint
    code: str  # code version


class Refused(Exception):
    """No cache for this stage (the message says why): it computes those parts every step."""


class TooLarge(Refused):
    """The cache would exceed its budgets."""


@dataclass(frozen=True)
class Budget:
    """Where a cache may go: memory up to ``memory_mb``, else disk up to ``disk_mb``."""

    memory_mb: int
    disk_mb: int = 0
    float16: bool = False

    def place(self, estimate: float, free_disk_mb: float) -> str:
        """``"memory"`` or ``"disk"`` for a cache of ``estimate`` bytes; raises :class:`TooLarge`."""
        mb = estimate / 2**20
        if mb > 0.9 * free_disk_mb:
            raise TooLarge(f"{mb:.0f} MiB, more than the free disk space ({free_disk_mb:.0f} MiB) allows")
        if mb <= self.memory_mb:
            return "memory"
        if mb <= self.disk_mb:
            return "disk"
        raise TooLarge(f"{mb:.1f} MiB > cache.memory_mb={self.memory_mb} and cache.disk_mb={self.disk_mb}")


def cache_key(
    context: CacheContext,
    producer_digest: dict,
    configs: dict,
    parts,
    flips,
    float16: bool,
    by_record: bool = False,
    val_proposals: int = 0,
) -> str:
    """A hex digest of everything a cached value is a function of; ``val_proposals``: of a
    proposer stage's val proposals, that many an image (their input is the eval reader)."""
    identity = {
        "format": FORMAT,
        "producer": producer_digest,
        "data": context.data,
        "code": context.code,
        "model": text_format.MessageToString(configs["model"]),
        "input": text_format.MessageToString(configs["train_input_config"]),
        "bfloat16": configs["train_config"].use_bfloat16,  # the input casts images to it
        "augmentation": [
            text_format.MessageToString(step) for step in configs["train_config"].data_augmentation_options
        ],
        "parts": list(parts),
        "flips": list(flips),
        "float16": float16,
        "by_record": by_record,
    }
    if val_proposals:
        identity["val"] = {
            "input": [text_format.MessageToString(c) for c in configs["eval_input_configs"]],
            "proposals": val_proposals,
        }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def _file(name: str) -> str:
    return name.replace("/", "__") + ".npy"


def load(directory: Path) -> tuple[np.ndarray, dict[str, np.ndarray], dict] | None:
    """(keys, arrays memory-mapped, meta) of a complete cache; None when there is none."""
    meta_path = directory / META
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    keys = np.load(directory / KEYS)
    arrays = {name: np.load(directory / _file(name), mmap_mode="r") for name in meta["names"]}
    return keys, arrays, meta


class Writer:
    """Fills a cache's arrays batch by batch in a partial directory; :meth:`commit` publishes it."""

    def __init__(self, directory: Path, capacity: int, float16: bool) -> None:
        self.directory, self.capacity, self.float16 = directory, capacity, float16
        self.partial = directory.with_name(f"{directory.name}.partial-{_HOST}-{os.getpid()}")
        remove_stale_partials(directory)
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        self.keys = np.lib.format.open_memmap(self.partial / KEYS, "w+", np.int64, (capacity,))
        self.arrays: dict[str, np.ndarray] = {}
        self.rows = 0

    def stored_dtype(self, name: str, value: np.ndarray) -> np.dtype:
        """float16 applies to features only: proposals' boxes feed cropping and stay exact."""
        if self.float16 and name.startswith("features/") and value.dtype == np.float32:
            return np.dtype(np.float16)
        return value.dtype

    def append(self, keys: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        if self.rows + len(keys) > self.capacity:
            raise RuntimeError(f"the build pass yielded more than the {self.capacity} images it counted")
        for name, value in outputs.items():
            if name not in self.arrays:
                dtype, shape = self.stored_dtype(name, value), (self.capacity, *value.shape[1:])
                self.arrays[name] = np.lib.format.open_memmap(self.partial / _file(name), "w+", dtype, shape)
            if self.arrays[name].dtype == np.float16:  # beyond float16's range: its largest value
                value = np.clip(value, -65504, 65504)
            self.arrays[name][self.rows : self.rows + len(keys)] = value
        self.keys[self.rows : self.rows + len(keys)] = keys
        self.rows += len(keys)

    def commit(self, meta: dict) -> Path:
        """Flush, write ``meta.json`` last, rename into place (another process's copy wins a race)."""
        if self.rows != self.capacity:
            raise RuntimeError(f"the build pass yielded {self.rows} images, {self.capacity} counted")
        for array in (self.keys, *self.arrays.values()):
            array.flush()
        meta = {**meta, "names": sorted(self.arrays), "rows": self.rows, "float16": self.float16}
        (self.partial / META).write_text(json.dumps(meta, indent=2))
        try:
            os.rename(self.partial, self.directory)
        except OSError:
            if not (self.directory / META).exists():
                raise
            # A complete copy appeared meanwhile (a sweep job beside this one): it is equal.
            log.info("%s: already built by another process; using that one", self.directory.name)
            shutil.rmtree(self.partial, ignore_errors=True)
        return self.directory

    def discard(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)


def remove_stale_partials(directory: Path) -> None:
    """Delete partial copies of ``directory`` whose writing process is gone (a killed build).

    Only this host's: a sweep's jobs on other nodes may share the directory, and their
    processes cannot be seen from here.
    """
    for partial in directory.parent.glob(f"{directory.name}.partial-{_HOST}-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            log.info("removing an incomplete cache left by a stopped process: %s", partial)
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftover: a pid reused after a kill -9 of an earlier attempt
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_mb(directory: Path) -> float:
    """Free space where ``directory`` would be written."""
    probe = directory
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free / 2**20
