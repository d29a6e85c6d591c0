"""Two ``python -m orchestrator`` processes as the two workers of one multi-worker run.

Each gets a ``TF_CONFIG`` naming both loopback ports and its own index, one CPU thread pool,
and a hard timeout: MultiWorkerMirroredStrategy waits for its peers, so a test must never wait
on a worker without a limit (the whole process group is killed on timeout).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import FAST

ROOT = Path(__file__).resolve().parents[2]


def free_ports(n: int) -> list[int]:
    """Ports the OS hands out now (closed again: a small race, fine on a test machine)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(ports: list[int], index: int) -> str:
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def environment(cache: Path, extra: dict | None = None) -> dict:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONPATH": str(ROOT),
        "FRCNN_ALT_CACHE": str(cache),
        "CUDA_VISIBLE_DEVICES": "",
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
        **(extra or {}),
    }


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def launch(name: str, args: list[str], env: dict, logs: Path) -> Proc:
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    handle = open(log, "w")  # noqa: SIM115 - the child keeps it open
    popen = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    return Proc(name, popen, log)


def launch_workers(
    args: list[str], cache: Path, logs: Path, tag: str = "", extra_env: dict | None = None
) -> list[Proc]:
    ports = free_ports(2)
    return [
        launch(
            f"worker{i}{tag}",
            args,
            environment(cache, {"TF_CONFIG": tf_config(ports, i), **(extra_env or {})}),
            logs,
        )
        for i in range(2)
    ]


def wait_all(procs: list[Proc], timeout: float) -> list[int]:
    """Each process's exit code; on timeout every process group is killed and the test fails."""
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.popen.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            kill(procs)
            tails = "\n".join(f"--- {q.name}:\n{q.tail()}" for q in procs)
            raise AssertionError(f"workers still running after {timeout:.0f} s:\n{tails}") from None
    return codes


def kill(procs: list[Proc], sig: int = signal.SIGKILL) -> None:
    """Signal each live process's group (each worker is a session of its own) and wait for it."""
    for p in procs:
        if p.popen.poll() is None:
            try:
                os.killpg(p.popen.pid, sig)
            except ProcessLookupError:
                pass
            p.popen.wait(timeout=30)


def wait_for(
    path_glob: tuple[Path, str], timeout: float, procs: list[Proc], accept: Callable[[Path], bool] = bool
) -> Path:
    """The first file matching ``glob`` under ``root`` that ``accept`` takes, polling; fails
    (killing all) on timeout or when a process ends first."""
    root, pattern = path_glob
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [path for path in sorted(root.glob(pattern)) if accept(path)]
        if found:
            return found[0]
        if any(p.popen.poll() is not None for p in procs):
            break
        time.sleep(0.2)
    kill(procs)
    tails = "\n".join(f"--- {q.name}:\n{q.tail()}" for q in procs)
    raise AssertionError(f"no {pattern} under {root} within {timeout:.0f} s:\n{tails}")


def overrides(run_dir: Path, pipeline: Path, *extra: str) -> list[str]:
    return [
        "model=tiny", f"model.pipeline_config={pipeline}", "model.batch_size=2", *FAST,
        "eval.every=null", "train.steps_per_loop=1", f"hydra.run.dir={run_dir}",
        "train.heartbeat_timeout_s=10", "train.cluster_timeout_s=300", *extra,
    ]  # fmt: skip
