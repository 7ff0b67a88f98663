"""Why a run must stop before its next file: a signal, or its state directory gone.

`janitor run` is stopped by systemd (SIGTERM), by an operator (Ctrl-C, SIGINT), or finds
that its `state_dir` was removed or replaced (the lock it holds then no longer stops a second
run: a new run would take a new lock in the new directory). In every case the file in hand
is finished and journaled, no further file is touched, the run is recorded and janitor
exits with one line: 143 after SIGTERM, 130 after SIGINT, 1 for a replaced state directory.

The executor asks `stop_reason()` before each file; it is None outside a run. While the run
is not acting on files (planning), a signal stops it at once: nothing is in hand.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from .errors import JanitorError

EXIT_SIGNAL: dict[int, int] = {signal.SIGTERM: 143, signal.SIGINT: 130}


class RunInterrupted(JanitorError):
    """The run stopped before its next file; `exit_code` says why (143, 130 or 1)."""

    code = "E_INTERRUPTED"

    def __init__(self, message: str, *, exit_code: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.exit_code = exit_code


class RunStop:
    """What one run checks before each file."""

    def __init__(self, verify_state: Callable[[], str | None] | None = None) -> None:
        self.signum: int | None = None
        self.acting = False
        self._verify_state = verify_state
        self._state_problem: str | None = None
        # processes acting for this run (janitor/execute.py): a signal is passed on to them,
        # so each stops before its own next file as this one does
        self.children: set[int] = set()

    def reason(self) -> str | None:
        if self.signum is not None:
            return f"interrupted by {signal.Signals(self.signum).name}"
        if self._state_problem is None and self._verify_state is not None:
            self._state_problem = self._verify_state()  # one stat per file (RunLock.verify)
        return self._state_problem

    def error(self, done: str) -> RunInterrupted:
        """The exception that ends the run, with the one line the operator sees."""
        if self.signum is not None:
            name = signal.Signals(self.signum).name
            return RunInterrupted(
                f"interrupted by {name}: finished the file in hand and stopped ({done}); "
                "the run is recorded as interrupted, run again to do the rest",
                exit_code=EXIT_SIGNAL.get(self.signum, 128 + self.signum),
            )
        return RunInterrupted(
            f"{self._state_problem}; stopped before acting on another file ({done})",
            exit_code=1, code="E_STATE_CHANGED",
        )

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        for pid in self.children:
            try:
                os.kill(pid, signum)
            except OSError:
                pass  # it has exited already
        if not self.acting:
            raise self.error("no file was in hand")


_active: RunStop | None = None


def current() -> RunStop | None:
    """The run being stopped by signals in this process, if any."""
    return _active


def stop_reason() -> str | None:
    """Why the current run must not act on another file; None to go on (or outside a run)."""
    return None if _active is None else _active.reason()


@contextmanager
def run_stop(verify_state: Callable[[], str | None] | None = None) -> Iterator[RunStop]:
    """SIGTERM and SIGINT handled for the duration (main thread only), and `stop_reason` live."""
    global _active
    stop = RunStop(verify_state)
    previous: dict[int, Any] = {}
    try:
        for signum in EXIT_SIGNAL:
            previous[signum] = signal.signal(signum, stop._on_signal)
    except ValueError:
        pass  # not the main thread (an embedding server): signals are its business
    _active = stop
    try:
        yield stop
    finally:
        _active = None
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def acting(stop: RunStop) -> Iterator[None]:
    """While files are being changed, a signal only asks the executor to stop."""
    stop.acting = True
    try:
        yield
    finally:
        stop.acting = False
