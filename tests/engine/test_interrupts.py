"""SIGINT / SIGTERM with real processes: prompt exit, one line, exit code 130 / 143, a checkpoint."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tensorflow as tf

from orchestrator.engine import interrupts
from tests.conftest import FAST

ROOT = Path(__file__).resolve().parents[2]
LINE = "interrupted at step {} of s1_rpn; rerun the same command to resume"

# A process under interrupts.trap(): prints "ready", then works in Python or in one native call
# that never checks for signals (the case of a long compiled TensorFlow call).
TRAPPED = """
import hashlib, logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s")
from orchestrator.engine import interrupts
with interrupts.trap("stage=demo"):
    try:
        with interrupts.during(sys.argv[1] + " work"):
            print("ready", flush=True)
            if sys.argv[1] == "native":
                hashlib.pbkdf2_hmac("sha256", b"x", b"y", 10**9)
            while True:
                pass
    except interrupts.Interrupted as exc:
        interrupts.exit_with(exc, logging.getLogger("demo"))
"""


def _trapped(mode: str, *signals: signal.Signals) -> tuple[int, float, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", TRAPPED, mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        time.sleep(0.2)
        sent = time.monotonic()
        for sig in signals:
            proc.send_signal(sig)
            time.sleep(0.2)
        out = proc.communicate(timeout=10)[0]
        return proc.returncode, time.monotonic() - sent, out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_an_interrupt_in_python_code_ends_at_once_with_one_line():
    code, seconds, out = _trapped("python", signal.SIGTERM)
    assert code == 143 and seconds < 1.5
    assert out == "interrupted during python work; rerun the same command to resume\n"


def test_an_interrupt_inside_a_long_native_call_ends_after_the_grace_period():
    code, seconds, out = _trapped("native", signal.SIGINT)
    assert code == 130 and interrupts.GRACE_SECONDS <= seconds < interrupts.GRACE_SECONDS + 2
    assert out == "interrupted during native work; rerun the same command to resume\n"


def test_a_second_interrupt_ends_the_process_at_once():
    code, seconds, out = _trapped("native", signal.SIGINT, signal.SIGINT)
    assert code == 130 and seconds < interrupts.GRACE_SECONDS
    assert out.startswith("interrupted again during native work; stopped without saving;")


def test_leaving_the_trap_restores_the_handlers():
    before = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    with interrupts.trap():
        assert signal.getsignal(signal.SIGINT) is not before[signal.SIGINT]
    assert {s: signal.getsignal(s) for s in interrupts.SIGNALS} == before
    assert interrupts.requested() is None


def _args(run_dir: Path) -> list[str]:
    """A 400-step s1_rpn whose second compiled call runs 199 steps (no log or checkpoint before 200)."""
    fast = [o for o in FAST if not o.startswith(("train.log_every", "train.checkpoint_every"))]
    return [
        *fast,
        "stage=s1_rpn",
        "steps=400",
        "train.steps_per_loop=200",
        "train.log_every=200",
        "train.checkpoint_every=1000",
        f"hydra.run.dir={run_dir}",
    ]


def _interrupt_once_training(run_dir: Path, cache: Path, sig: signal.Signals, after_step: int, wait=r""):
    """Start the CLI, wait for a step past ``after_step`` (and ``wait``), send ``sig`` inside
    the long compiled call; returns (exit code, seconds from the signal to the exit, output)."""
    log = run_dir.parent / f"{run_dir.name}-{sig.name}.txt"
    env = {**os.environ, "FRCNN_ALT_CACHE": str(cache)}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *_args(run_dir)], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            text = log.read_text()
            steps = [int(n) for n in re.findall(r"\|\s*(\d+)/400 \[", text)]
            if steps and max(steps) > after_step and re.search(wait, text):
                break
            time.sleep(0.05)
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(1.0)  # well inside the 199-step call (~15 steps/s on 2 cores)
        sent = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=60)
        return proc.returncode, time.monotonic() - sent, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()


def _check_stopped(run_dir: Path, code: int, seconds: float, out: str, expected_code: int) -> int:
    """The contract of an interrupt in training; returns the step it stopped at."""
    assert code == expected_code, out[-3000:]
    assert seconds < 5, f"{seconds:.1f} s from the signal to the exit"
    assert "Traceback" not in out
    steps = re.findall(LINE.format(r"(\d+)"), out)
    assert len(steps) == 1, out[-3000:]
    step = int(steps[0])
    assert step < 200  # stopped inside the 199-step compiled call, not at its end
    (index,) = run_dir.glob(f"alternating/s1_rpn*/checkpoints/ckpt-{step}.index")
    reader = tf.train.load_checkpoint(str(index.with_suffix("")))
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == step
    assert reader.get_tensor("optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE") == step  # steps run == counted
    assert not list(run_dir.glob("alternating/s1_rpn*/DONE"))
    return step


@pytest.mark.slow
def test_sigint_then_sigterm_stop_training_within_seconds_and_the_rerun_resumes(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    code, seconds, out = _interrupt_once_training(run_dir, cache_dir, signal.SIGINT, after_step=0)
    first = _check_stopped(run_dir, code, seconds, out, expected_code=130)
    assert first >= 1

    # The same command again: resumes from that checkpoint; SIGTERM stops it further on.
    resumed = rf"resuming from \S*ckpt-{first}\b"
    code, seconds, out = _interrupt_once_training(
        run_dir, cache_dir, signal.SIGTERM, after_step=first, wait=resumed
    )
    assert re.search(resumed, out)
    second = _check_stopped(run_dir, code, seconds, out, expected_code=143)
    assert second > first
