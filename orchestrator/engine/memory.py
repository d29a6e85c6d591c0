"""Peak resident memory of one stage, measured inside the process that runs it.

``ru_maxrss`` only ever grows, so in ``stage=all`` it would report the largest stage for every
stage after it. Linux keeps a resettable high-water mark instead (``VmHWM``; writing ``5`` to
``/proc/self/clear_refs`` resets it, see proc(5)), which gives each stage its own peak.
Elsewhere both functions degrade to ``ru_maxrss`` (never reset) rather than fail.
"""

from __future__ import annotations

import re
import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")


def reset_peak_rss() -> None:
    """Start a new high-water mark (no-op where the kernel does not offer one)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> int:
    """Peak resident set size in MiB since the last :func:`reset_peak_rss`."""
    try:
        return int(re.search(r"VmHWM:\s+(\d+) kB", _STATUS.read_text()).group(1)) // 1024
    except (OSError, AttributeError):
        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale // 2**20
