"""Progress of long transfers (archive uploads, restores) on stderr.

On a terminal in text mode: a rich progress bar (bytes, files, rate, ETA). Otherwise (a
pipe, a journald unit, a cron mail): one plain line every `interval` seconds, so logs show
that a long run is alive without a line per file. With `--log-format json` the same
figures go out as `transfer_progress` events instead. All methods are thread-safe: the
upload workers call `advance` from their own threads.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

from .units import format_duration, format_size

if TYPE_CHECKING:
    from .events import EventLog


class TransferProgress:
    """Counts bytes and files; subclasses decide how to show them."""

    def __init__(self, label: str, total_files: int, total_bytes: int) -> None:
        self.label = label
        self.total_files = total_files
        self.total_bytes = total_bytes
        self.files = 0
        self.bytes = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def advance(self, nbytes: int) -> None:
        """Bytes moved since the last call (s3transfer may report negative amounts on retry)."""
        with self._lock:
            self.bytes += nbytes
            self._changed()

    def file_done(self, nbytes_left: int = 0) -> None:
        """One file finished; `nbytes_left` are its bytes not reported through `advance`."""
        with self._lock:
            self.files += 1
            self.bytes += nbytes_left
            self._changed()

    def close(self) -> None:
        with self._lock:
            self._finish()

    def _changed(self) -> None:
        pass

    def _finish(self) -> None:
        pass

    def summary(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = max(self.bytes, 0) / elapsed
        left = self.total_bytes - self.bytes
        eta = format_duration(left / rate) if rate > 0 and left > 0 else "-"
        return (
            f"{self.label}: {self.files}/{self.total_files} files, "
            f"{format_size(max(self.bytes, 0))}/{format_size(self.total_bytes)}, "
            f"{format_size(int(rate))}/s, ETA {eta}"
        )


class PlainProgress(TransferProgress):
    """A plain line every `interval` seconds (and a last one if any was printed)."""

    def __init__(self, label: str, total_files: int, total_bytes: int, *, stream: TextIO | None = None,
                 events: EventLog | None = None, interval: float = 5.0) -> None:
        super().__init__(label, total_files, total_bytes)
        self.stream = stream
        self.events = events
        self.interval = interval
        self._last = self.started
        self._printed = False

    def _changed(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._show()

    def _finish(self) -> None:
        if self._printed:
            self._show()

    def _show(self) -> None:
        self._printed = True
        if self.events is not None:
            elapsed = max(time.monotonic() - self.started, 1e-6)
            self.events.emit("transfer_progress", label=self.label, files=self.files,
                             total_files=self.total_files, bytes=max(self.bytes, 0),
                             total_bytes=self.total_bytes, bytes_per_second=int(max(self.bytes, 0) / elapsed))
        else:
            print(self.summary(), file=self.stream or sys.stderr, flush=True)


class RichProgress(TransferProgress):
    """A live rich bar on the terminal (stderr)."""

    def __init__(self, label: str, total_files: int, total_bytes: int) -> None:
        super().__init__(label, total_files, total_bytes)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress: Any = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TextColumn("{task.fields[files]}"),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task(label, total=total_bytes, files=self._files_text())
        self._progress.start()

    def _files_text(self) -> str:
        return f"{self.files}/{self.total_files} files"

    def _changed(self) -> None:
        self._progress.update(self._task, completed=max(self.bytes, 0), files=self._files_text())

    def _finish(self) -> None:
        self._changed()
        self._progress.stop()


def make_progress(label: str, total_files: int, total_bytes: int, events: EventLog | None = None) -> TransferProgress:
    """A bar on a terminal, plain lines otherwise, progress events in JSON log mode."""
    if events is not None and events.fmt == "json":
        return PlainProgress(label, total_files, total_bytes, events=events)
    if sys.stderr.isatty():
        return RichProgress(label, total_files, total_bytes)
    return PlainProgress(label, total_files, total_bytes)
