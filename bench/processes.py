"""One child process, measured: every bench figure of a whole process comes from here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def run_case(name: str, env: dict, python: str = sys.executable, **kwargs) -> dict:
    """One ``bench.cases`` function in a fresh ``python`` process: its RESULT line plus process figures."""
    run = spawn([python, "-m", "bench.cases", name, json.dumps(kwargs)], env)
    lines = [line for line in run.output.splitlines() if line.startswith("RESULT ")]
    if run.code or not lines:
        raise RuntimeError(
            f"bench case {name} {kwargs} on {python} failed (exit {run.code}):\n{run.output[-3000:]}"
        )
    return {**json.loads(lines[-1][7:]), "process_wall_s": round(run.wall_s, 1),
            "process_cpu_s": round(run.cpu_s, 1), "process_peak_rss_mb": round(run.peak_rss_mb)}  # fmt: skip
