"""Frozen-weight audit: proof, not assumption, that a stage left its frozen groups untouched.

Every variable of every frozen group (BatchNorm moving statistics included) is snapshotted
right after initialisation and compared byte for byte after the last step. A digest of the
snapshot is also kept on disk, so a stage that was killed and resumed is still compared with
its values at first initialisation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.groups import ModuleGroups


class AuditError(RuntimeError):
    """A frozen variable changed during the stage."""


@dataclass(frozen=True)
class Snapshot:
    values: dict[str, tuple[str, np.ndarray]]  # variable name -> (group, value)

    @classmethod
    def take(cls, groups: ModuleGroups, frozen: tuple[str, ...]) -> Snapshot:
        return cls({v.name: (g, v.numpy().copy()) for g in frozen for v in groups.variables[g]})

    def digest(self) -> dict[str, str]:
        """Per group, a hash of the values in variable order (names vary: Keras adds ``_1``)."""
        out: dict[str, hashlib._Hash] = {}
        for group, value in self.values.values():
            out.setdefault(group, hashlib.sha256()).update(value.tobytes())
        return {g: h.hexdigest() for g, h in out.items()}


def load_or_store_digest(path: Path, snapshot: Snapshot) -> dict[str, str]:
    """The digest at first initialisation: written once, read back on resume."""
    if path.exists():
        return json.loads(path.read_text())
    digest = snapshot.digest()
    path.write_text(json.dumps(digest, indent=2))
    return digest


def audit(groups: ModuleGroups, before: Snapshot, initial_digest: dict[str, str]) -> dict:
    """Compare now with ``before``; raise :class:`AuditError` naming what moved."""
    frozen = sorted({g for g, _ in before.values.values()})
    after = Snapshot.take(groups, tuple(frozen))
    changed = [
        f"{name} ({group}, max |diff| {float(np.max(np.abs(after.values[name][1] - value))):.3g})"
        for name, (group, value) in before.values.items()
        if after.values[name][1].tobytes() != value.tobytes()
    ]
    digest_moved = [g for g, d in after.digest().items() if initial_digest.get(g) != d]
    result = {
        "frozen_groups": frozen,
        "variables_checked": len(before.values),
        "changed": changed,
        "passed": not changed and not digest_moved,
    }
    if changed or digest_moved:
        raise AuditError(
            f"frozen-weight audit failed: {len(changed)} frozen variable(s) changed: {changed[:5]}"
            + (f"; groups differ from their first initialisation: {digest_moved}" if digest_moved else "")
        )
    return result
