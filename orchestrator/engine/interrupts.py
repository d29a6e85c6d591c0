"""Ctrl-C and SIGTERM: stop within moments, keep what was trained, say so in one line.

:func:`trap` (entered by ``orchestrator/__main__.py`` around ``run()``) installs one handler
for both signals, for the whole process:

* while the training loop runs it is inside :func:`training`: a signal then only *requests* a
  stop (:func:`requested`). The compiled call leaves its ``tf.while_loop`` after the step it
  is in, the runner saves a checkpoint at that step and raises :class:`Interrupted` itself;
* anywhere else the handler raises :class:`Interrupted` at once in the main thread, naming
  what was running: evaluation, backbone pre-training, data conversion (from the modules on
  the main thread's stack), else the innermost :func:`during` label, else trap's own label;
* a Python handler runs only between bytecodes, so while the main thread sits in one long
  native call (a compiled evaluation or pre-training step) a watchdog thread, woken through
  ``signal.set_wakeup_fd``, ends the process with that line if the handler has not run
  ``GRACE_SECONDS`` after the signal; a second signal ends the process at once.

Exit codes follow the shell's convention, 128 + the signal: 130 for SIGINT, 143 for SIGTERM.
Nothing here imports TensorFlow: the trap is up before TensorFlow's seconds-long import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import NoReturn

log = logging.getLogger(__name__)

RERUN = "rerun the same command to resume"
GRACE_SECONDS = 2.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Innermost module on the main thread's stack -> what it is doing (evaluation gets the stage).
ACTIVITIES = (
    ("orchestrator.engine.evaluate", "evaluation"),
    ("orchestrator.engine.pretrain", "backbone pre-training"),
    ("orchestrator.data", "data conversion"),
    ("orchestrator.outputs.export", "export"),
    ("orchestrator.outputs.predict", "prediction"),
)


class Interrupted(BaseException):
    """SIGINT or SIGTERM: a one-line message and the shell's exit code (130 or 143).

    A ``BaseException`` like ``KeyboardInterrupt``, so no ``except Exception`` on the way up
    swallows it; not a :class:`~stages.errors.UserError` (nothing is the user's to fix).
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.code = 128 + signum


class _State:
    def __init__(self, label: str = "the run") -> None:
        self.label = label
        self.signum: int | None = None
        self.training = 0  # > 0 while the training loop handles the stop itself
        self.phases: list[str] = []
        self.stage: str | None = None  # the stage most recently trained (names its evaluation)
        self.reported = False


_state = _State()


def requested() -> int | None:
    """The signal that asked this process to stop, if one did (only under :func:`trap`)."""
    return _state.signum


@contextlib.contextmanager
def training() -> Iterator[None]:
    """The training loop runs inside this: a signal requests a stop instead of raising."""
    _state.training += 1
    try:
        yield
    finally:
        _state.training -= 1


@contextlib.contextmanager
def during(label: str, stage: str | None = None) -> Iterator[None]:
    """Name what runs inside, for the interrupt line ("interrupted during <label>; ...")."""
    _state.phases.append(label)
    if stage is not None:
        _state.stage = stage
    try:
        yield
    finally:
        _state.phases.pop()


def describe(frame: FrameType | None) -> str:
    """What the main thread is doing at ``frame``, for the interrupt line."""
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        for prefix, activity in ACTIVITIES:
            if module == prefix or module.startswith(prefix + "."):
                if activity == "evaluation" and _state.stage:
                    return f"{_state.stage} evaluation"
                return activity
        frame = frame.f_back
    return _state.phases[-1] if _state.phases else _state.label


def message(what: str) -> str:
    return f"interrupted during {what}; {RERUN}"


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _state.signum is not None:
        return  # a repeat: the watchdog ends the process
    _state.signum = signum
    if _state.training:
        return  # the loop stops after the current step, saves, and raises Interrupted
    raise Interrupted(message(describe(frame)), signum)


def _main_frame() -> FrameType | None:
    return sys._current_frames().get(threading.main_thread().ident)


def _exit_now(signum: int, line: str) -> NoReturn:
    """Log ``line`` (unless the entry point already did), flush, and leave with the signal's code."""
    if not _state.reported:
        _state.reported = True
        log.error("%s", line)
    flush_and_exit(128 + signum)


def flush_and_exit(code: int) -> NoReturn:
    """Flush the log handlers and std streams, then leave without the interpreter's teardown.

    Tearing down a process that built TensorFlow models garbage-collects for seconds (4-17 s
    measured on the tiny model); everything worth keeping is on disk by now (checkpoints are
    written synchronously, JSON files atomically).
    """
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            with contextlib.suppress(Exception):
                handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _watch(fd: int) -> None:
    """Watchdog: the wakeup fd gets one byte per signal, even while the main thread is busy."""
    first, deadline = None, 0.0
    while True:
        ready, _, _ = select.select([fd], [], [], None if first is None else 0.1)
        if ready:
            data = os.read(fd, 64)
            if not data or 0 in data:
                return  # trap() is done
            for signum in (b for b in data if b in SIGNALS):
                if first is not None:
                    what = describe(_main_frame())
                    _exit_now(first, f"interrupted again during {what}; stopped without saving; {RERUN}")
                first, deadline = signum, time.monotonic() + GRACE_SECONDS
        if first is not None and _state.signum is None and time.monotonic() > deadline:
            # The main thread has not reached a bytecode (so its handler) since the signal.
            _exit_now(first, message(describe(_main_frame())))


@contextlib.contextmanager
def trap(label: str = "the run") -> Iterator[None]:
    """Handle SIGINT and SIGTERM as above while inside; ``label`` names the whole run.

    Only the main thread can install signal handlers; elsewhere this does nothing.
    """
    global _state
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state = _State(label)
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    watchdog = threading.Thread(target=_watch, args=(read_fd,), name="interrupt-watchdog", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.write(write_fd, b"\0")
        watchdog.join()
        os.close(read_fd)
        os.close(write_fd)


def reinstall() -> None:
    """Take SIGINT and SIGTERM back (inside :func:`trap`) after a library installed its own.

    TensorFlow's coordination service, started by ``MultiWorkerMirroredStrategy``, installs a
    C-level SIGTERM handler of its own (a preemption notifier); measured on TF 2.15 with two
    workers: SIGTERM to one was swallowed and the run went on to its end.
    """
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is _on_signal
    ):
        for s in SIGNALS:
            signal.signal(s, _on_signal)


def _close_progress_bars() -> None:
    with contextlib.suppress(Exception):
        from tqdm import tqdm

        for bar in list(getattr(tqdm, "_instances", ())):
            bar.close()


def exit_with(exc: Interrupted, logger: logging.Logger) -> NoReturn:
    """The entry point's end for an interrupt: the one line, then exit at once with its code."""
    _state.reported = True
    _close_progress_bars()  # the line starts a line of its own, not the end of a bar's
    logger.error("%s", exc)
    flush_and_exit(exc.code)
