"""One child process, measured: every bench figure of a whole process comes from here."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Finished:
    code: int
    wall_s: float
    cpu_s: float  # user + system, all threads (wait4's rusage)
    peak_rss_mb: float
    output: str  # stdout and stderr together

    def check(self, what: str) -> Finished:
        if self.code:
            raise RuntimeError(f"{what} failed (exit {self.code}):\n{self.output[-3000:]}")
        return self


def spawn(args: list[str], env: dict) -> Finished:
    """Run ``args`` in the repository root and wait for it (exit code, time, CPU, memory, output)."""
    started = time.time()
    out = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    out.seek(0)
    return Finished(
        code=os.waitstatus_to_exitcode(status),
        wall_s=time.time() - started,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,
        output=out.read(),
    )
