"""Shrink logs that a running service keeps open, without losing lines.

logrotate's ``copytruncate`` copies the log and then ``ftruncate``s it; whatever the service
appends between the end of the copy and the truncate is gone. This module avoids that:

``collapse-range`` (ext4, XFS)
    The prefix ``[0, L)`` is copied into the rotated copy (temp file, fsync, rename into
    place) and then removed from the live file with ``fallocate(FALLOC_FL_COLLAPSE_RANGE)``.
    The kernel shifts the remaining data under the inode lock, so an ``O_APPEND`` writer
    racing with us just lands at the new end of file: nothing is lost, nothing duplicated.
    ``L`` must be a multiple of the filesystem block size, so the copy usually ends in the
    middle of a line and the live file starts with the rest of that line. ``copy + live`` is
    still byte-for-byte the original stream; at least the requested tail stays live, plus
    less than one block (and at least one byte: the kernel refuses to collapse up to EOF).

``copy-truncate`` (tmpfs, NFS, anything else)
    The prefix ``[0, T)`` (``T`` = where the kept tail starts, not aligned) goes into the
    copy, durably, before the live file is touched. Then everything from ``T`` to the
    current end is moved down to offset 0 with pread/pwrite, re-checking the size until a
    pass finds nothing new, and the file is cut with ``ftruncate`` right after that last
    ``fstat``. Lines keep their order and none is duplicated, but what a writer appends
    between that last ``fstat`` and the ``ftruncate`` (two syscalls, nothing in between)
    is lost; that window cannot be closed without collapse-range. It is usually ~20 us,
    but ftruncate must take the inode lock, and a writer in a tight loop can keep it from
    getting it for about a scheduler tick (measured up to 5.5 ms on tmpfs); we report a
    window over 1 ms in CutResult.warnings. A crash in the middle leaves duplicates in the
    live file, never a loss.

``rename``
    The classic: rename the log to ``NAME.1``, create a fresh ``NAME`` with the old owner
    and mode (``O_EXCL|O_NOFOLLOW``, 0600 until fchmod), then signal the service or run a
    postrotate command so it reopens. Loss-free as long as the service reopens.

Writers without ``O_APPEND`` (e.g. a shell ``>`` redirection) keep their own file offset:
after a truncate or collapse they write at the old offset, leaving a NUL-filled sparse head
(logrotate #363, #286). ``cut_log`` refuses such files unless allowed explicitly.

Rotated copies are ``NAME.1`` (newest) .. ``NAME.N``, or ``NAME-YYYYMMDD`` with ``dateext``,
plus ``.gz``/``.zst`` when compressed. Compression only happens after the cut. Concatenating
the copies oldest to newest (decompressed) and then the live file gives every byte written
exactly once.

Hostile directories (docs/security.md, "Truncate: rotation, compression and crash records"):

* Everything is done through directory descriptors (`cut_log_at`): the log, every rotated
  copy and every scratch file is reached with ``openat``/``renameat``/``unlinkat`` relative
  to the directory the caller opened, never by a path string.
* janitor's own record of what it wrote (the *ledger*: each copy's dev, ino, size and a
  fingerprint of its bytes; the cut or compression in progress) lives under
  ``state_dir/logcut`` (root, 0700). A copy janitor cannot find in its ledger is not janitor's:
  it is never renamed, compressed, read or unlinked. A foreign ``NAME.1`` (the writer rotates
  the log itself, or a planted symlink, FIFO, device or hard link) makes janitor leave the
  log alone with a reason (`ForeignCopy`), never fight it.
* Scratch files have unguessable names, are created ``O_CREAT|O_EXCL|O_NOFOLLOW`` 0600 and
  checked with ``fstat`` (our uid, one link); copies get their final owner and mode through
  the descriptor once complete.
* Creating or renaming names in the directory runs as the account the caller passes
  (`janitor.asowner`); the ledger and the live file's descriptor stay with the caller.
* Reads are bounded (by the size the plan saw, the size recorded for a copy); the move-down
  loop of copy-truncate is bounded in time, so an endlessly growing file cannot hang a run.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import gzip
import hashlib
import json
import os
import re
import secrets
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from janitor.asowner import ROOT, Credentials, credentials_for_dir, run_as, writers_of
from janitor.disk import fstype
from janitor.errors import DiskFull, FileChanged, JanitorError
from janitor.procfs import scan_open_files

__all__ = [
    "CutOptions",
    "CutResult",
    "ForeignCopy",
    "Ledger",
    "NonAppendWriter",
    "check_room",
    "collapse_range_supported",
    "data_extents",
    "links_allowed",
    "cut_log",
    "cut_log_at",
    "non_append_writers",
    "plan_method",
    "predict_method",
    "recover_cut",
    "recover_cut_at",
    "validate_options",
]

T = TypeVar("T")

FALLOC_FL_COLLAPSE_RANGE = 0x08
COMPRESS_SUFFIX = {"none": "", "gzip": ".gz", "zstd": ".zst"}
MODES = ("copytruncate", "rename")
COLLAPSE_FS = ("ext4", "xfs")
_CHUNK = 1 << 20
_POSTROTATE_TIMEOUT = 60.0
_SLOW_WINDOW = 0.001  # copy-truncate: warn when fstat->ftruncate took longer than this
_REOPEN_WAIT = 5.0  # rename mode: how long to wait for the service to let go of NAME.1
_MOVE_DEADLINE = 10.0  # copy-truncate: give up moving down (duplicates, no loss) after this
_FP_BYTES = 4096  # bytes fingerprinted at each end of a copy (with dev, ino and size: against inode reuse)
_PROBE = 4096  # bytes fingerprinted on each side of a cut (crash records)
_LEDGER_MAX = 4 << 20  # a ledger file larger than this is not ours
_PIDFILE_MAX = 64
O_CANDIDATE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


@dataclass(frozen=True)
class CutOptions:
    rotate: int = 0
    compress: str = "none"
    delay_compress: bool = False
    keep_tail_lines: int | None = None
    keep_tail_bytes: int | None = None
    olddir: str | None = None
    mode: str = "copytruncate"
    allow_non_append_writers: bool = False
    reopen_signal: str | None = None
    reopen_pidfile: str | None = None
    postrotate: tuple[str, ...] = ()
    dateext: bool = False  # copies named NAME-YYYYMMDD (logrotate's dateext) instead of NAME.N


@dataclass(frozen=True)
class CutResult:
    path: str
    method: str
    bytes_before: int
    bytes_cut: int
    bytes_after: int
    rotated_to: str | None
    compressed: tuple[str, ...]
    # Problems after the cut succeeded (e.g. no room to compress): the data is safe.
    warnings: tuple[str, ...] = field(default=())


class NonAppendWriter(JanitorError):
    """A process writes the log without O_APPEND; cutting it would leave a NUL-filled head."""

    code = "E_NON_APPEND_WRITER"


class ForeignCopy(JanitorError):
    """A name janitor would rotate is not a copy janitor wrote; the log is left alone.

    `skip_code` says why: ``rotated_by_writer`` (a plain file janitor did not write sits
    where janitor's copy would go: something else rotates this log) or ``unsafe_copy`` (a
    symlink, FIFO, device, socket or hard link among the copies).
    """

    code = "E_FOREIGN_COPY"

    def __init__(self, message: str, *, skip_code: str = "rotated_by_writer") -> None:
        super().__init__(message)
        self.skip_code = skip_code


# --------------------------------------------------------------------------- validation


def validate_options(options: CutOptions) -> list[str]:
    """Every problem with `options`, as operator-facing messages (empty list: fine)."""
    problems: list[str] = []
    if isinstance(options.rotate, bool) or not isinstance(options.rotate, int):
        problems.append(f"rotate must be an integer, not {options.rotate!r}")
    elif options.rotate < 0:
        problems.append(f"rotate must be 0 or more, not {options.rotate}")
    if options.compress not in COMPRESS_SUFFIX:
        problems.append(
            f"compress must be one of {', '.join(COMPRESS_SUFFIX)}, not {options.compress!r}"
        )
    if options.mode not in MODES:
        problems.append(f"mode must be one of {', '.join(MODES)}, not {options.mode!r}")
    if options.keep_tail_lines is not None and options.keep_tail_bytes is not None:
        problems.append("set at most one of keep_tail_lines and keep_tail_bytes")
    for name in ("keep_tail_lines", "keep_tail_bytes"):
        value = getattr(options, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{name} must be an integer, not {value!r}")
        elif value is not None and value < 0:
            problems.append(f"{name} must be 0 or more, not {value}")
    if options.mode == "rename":
        if options.keep_tail_lines is not None or options.keep_tail_bytes is not None:
            problems.append("keep_tail_lines/keep_tail_bytes are not supported with mode rename")
        if options.reopen_signal is not None:
            if _signal_of(options.reopen_signal) is None:
                problems.append(f"reopen_signal {options.reopen_signal!r} is not a signal name")
            if not options.reopen_pidfile:
                problems.append("reopen_signal needs reopen_pidfile")
        if options.reopen_pidfile and options.reopen_signal is None:
            problems.append("reopen_pidfile is set but reopen_signal is not")
        if isinstance(options.postrotate, str):
            problems.append("postrotate must be an argv list, not a shell string")
    elif options.reopen_signal or options.reopen_pidfile or options.postrotate:
        problems.append("reopen_signal, reopen_pidfile and postrotate need mode rename")
    if options.dateext and options.rotate == 0:
        problems.append("dateext needs rotate (how many dated copies to keep)")
    return problems


def _signal_of(name: str) -> signal.Signals | None:
    name = name.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return signal.Signals[name]
    except KeyError:
        return None


# --------------------------------------------------------------------------- /proc (janitor.procfs)


def _writer_flags(dev: int, ino: int) -> tuple[list[int], list[int]]:
    """(pids writing dev/ino, pids writing it without O_APPEND): the one /proc scanner."""
    files = scan_open_files({dev})
    return (sorted(set(files.writers.get((dev, ino), []))),
            sorted(set(files.non_append_writers.get((dev, ino), []))))


def non_append_writers(dev: int, ino: int) -> list[int]:
    """Pids (not ours) holding dev/ino open for writing without O_APPEND."""
    return _writer_flags(dev, ino)[1]


def _writers(dev: int, ino: int) -> list[int]:
    return _writer_flags(dev, ino)[0]


# --------------------------------------------------------------------------- the method


def predict_method(options: CutOptions, dev: int) -> str:
    """The method a cut will use: 'collapse-range', 'copy-truncate' or 'rename'.

    Plan and run both ask this one function, and it writes nothing (it reads the
    filesystem type of `dev` from mountinfo): collapse-range on ext4 and XFS, copy-truncate
    elsewhere. Where the kernel still refuses the collapse (an ext4 file without extents,
    an odd allocation unit), the run falls back to copy-truncate from the same cut point
    and reports the method it used.
    """
    if options.mode == "rename":
        return "rename"
    return "collapse-range" if fstype(dev) in COLLAPSE_FS else "copy-truncate"


def plan_method(path: str | os.PathLike[str], options: CutOptions) -> str:
    """`predict_method` for a path (for callers that have one; writes nothing)."""
    return predict_method(options, _dev_of(path))


def collapse_range_supported(path: str | os.PathLike[str]) -> bool:
    """Whether collapse-range is the predicted method where `path` lives (writes nothing)."""
    return predict_method(CutOptions(), _dev_of(path)) == "collapse-range"


def _dev_of(path: str | os.PathLike[str]) -> int:
    try:
        return os.stat(path, follow_symlinks=False).st_dev
    except OSError:
        return os.stat(os.path.dirname(os.path.abspath(os.fspath(path)))).st_dev


_libc: ctypes.CDLL | None = None


def _libc_fn(name: str) -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return getattr(_libc, name)


def _fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    func = _libc_fn("fallocate")
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    if func(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


_FALLBACK_ERRNOS = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS}
_RENAME_NOREPLACE = 1


def _rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """renameat2(RENAME_NOREPLACE): never replaces whatever sits at `dst` (EEXIST instead)."""
    func = _libc_fn("renameat2")
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    if func(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOSYS):  # filesystems without the flag
        raise OSError(err, os.strerror(err), dst)
    if _lexists(dst_fd, dst):
        raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


def _lexists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _block_size(fd: int) -> int:
    return os.fstatvfs(fd).f_bsize or 4096


# --------------------------------------------------------------------------- the ledger


@dataclass
class CopyInfo:
    """A copy janitor wrote: where, which inode, how many bytes, a fingerprint of them."""

    name: str
    dev: int
    ino: int
    size: int
    fp: str
    t: float  # when it was rotated (orders the copies, newest first)
    grows: bool = False  # rename mode: the old log, which its writer may append to until it reopens

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _fingerprint_fd(fd: int, size: int) -> str:
    """sha256 over the size and the first and last 64 KiB (bounded by `size`)."""
    h = hashlib.sha256(str(size).encode())
    h.update(os.pread(fd, min(size, _FP_BYTES), 0))
    if size > _FP_BYTES:
        h.update(os.pread(fd, _FP_BYTES, size - _FP_BYTES))
    return h.hexdigest()


def _head_fp(fd: int, size: int) -> str:
    return hashlib.sha256(os.pread(fd, min(size, _FP_BYTES), 0)).hexdigest()


@dataclass
class LogRecord:
    """The ledger's entry for one log (one base name in one copy directory)."""

    copies: list[CopyInfo] = field(default_factory=list)  # newest first
    pending: dict[str, Any] | None = None  # a cut or a compression in progress
    live: tuple[int, int] | None = None  # (dev, ino) of the live log at the last cut
    last_rotated: float | None = None
    first_seen: float | None = None

    def copy_named(self, name: str) -> CopyInfo | None:
        return next((c for c in self.copies if c.name == name), None)


class Ledger:
    """janitor's record of the copies it wrote, per log, under ``state_dir/logcut``.

    The directory is created root-only (0700) and is trusted only while it is a directory
    owned by janitor's uid that nobody else may write; each record file only while it is a
    regular file with one link, owned by janitor's uid and writable by nobody else. An
    untrusted record counts as no record: janitor then owns no copy of that log, so it
    touches none (it may skip the log; it never removes anything on a stranger's word).
    """

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "logcut")

    def _dir_fd(self, *, create: bool = True) -> int:
        if create:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.path, 0o700)
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            os.close(fd)
            raise JanitorError(f"{self.path} is not janitor's own directory (owner {st.st_uid}, mode "
                               f"{stat.S_IMODE(st.st_mode):o}); not trusting its records", code="E_UNSAFE_STATE")
        return fd

    @staticmethod
    def key(dest_fd: int, base: str) -> str:
        st = os.fstat(dest_fd)
        digest = hashlib.sha256(os.fsencode(base)).hexdigest()[:32]
        return f"{st.st_dev}-{st.st_ino}-{digest}.json"

    def load(self, key: str) -> LogRecord:
        """The record under `key`; an empty one when there is none or it cannot be trusted."""
        try:
            dfd = self._dir_fd(create=False)
        except FileNotFoundError:
            return LogRecord()
        try:
            try:
                fd = os.open(key, os.O_RDONLY | O_CANDIDATE, dir_fd=dfd)
            except FileNotFoundError:
                return LogRecord()
            except OSError:
                return LogRecord()  # a symlink or worse: not ours
            try:
                st = os.fstat(fd)
                if (not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid()
                        or st.st_mode & 0o022 or st.st_size > _LEDGER_MAX):
                    return LogRecord()
                raw = os.pread(fd, st.st_size, 0)
            finally:
                os.close(fd)
        finally:
            os.close(dfd)
        try:
            data = json.loads(raw)
            return LogRecord(
                copies=[CopyInfo(**c) for c in data.get("copies", [])],
                pending=data.get("pending"),
                live=tuple(data["live"]) if data.get("live") else None,
                last_rotated=data.get("last_rotated"),
                first_seen=data.get("first_seen"),
            )
        except (ValueError, TypeError, KeyError):
            return LogRecord()

    def save(self, key: str, record: LogRecord, *, durable: bool = True) -> None:
        """Replace the record atomically. `durable=False` skips the directory's fsync: for
        records whose loss in a crash only brings back the previous one, which recovery
        settles by inode (`_resync`)."""
        body = json.dumps({
            "copies": [c.as_json() for c in record.copies], "pending": record.pending,
            "live": list(record.live) if record.live else None, "last_rotated": record.last_rotated,
            "first_seen": record.first_seen,
        }).encode()
        dfd = self._dir_fd()
        try:
            tmp = f".{secrets.token_hex(12)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_CANDIDATE, 0o600, dir_fd=dfd)
            try:
                _write_all(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, key, src_dir_fd=dfd, dst_dir_fd=dfd)
            if durable:
                os.fsync(dfd)
        finally:
            os.close(dfd)


_default_ledger_dir: str | None = None


def _ledger_for(state_dir: str | None) -> Ledger:
    """The ledger under `state_dir`; without one, a private directory for this process."""
    global _default_ledger_dir
    if state_dir is None:
        if _default_ledger_dir is None:
            import atexit
            import shutil
            import tempfile

            _default_ledger_dir = tempfile.mkdtemp(prefix="janitor-logcut-")
            atexit.register(shutil.rmtree, _default_ledger_dir, True)
        state_dir = _default_ledger_dir
    return Ledger(state_dir)


# --------------------------------------------------------------------------- copies on disk


def _copy_re(base: str, dateext: bool) -> re.Pattern[str]:
    if dateext:
        return re.compile(re.escape(base) + r"-(\d{8})(?:-\d+)?(\.gz|\.zst)?")
    return re.compile(re.escape(base) + r"\.(\d+)(\.gz|\.zst)?")


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return what
    return "not a regular file"


def _why_not_ours(dest_fd: int, name: str, record: LogRecord, *, expect_present: bool = True,
                  read: bool = True) -> str | None:
    """None when `name` is exactly a copy janitor wrote (ledger: dev, ino, size, fingerprint).

    `read=False` skips the fingerprint (a re-check of names verified moments ago in this run)."""
    try:
        st = os.stat(name, dir_fd=dest_fd, follow_symlinks=False)
    except FileNotFoundError:
        return "missing" if expect_present else None
    if not stat.S_ISREG(st.st_mode):
        return f"is {_kind(st.st_mode)}"
    if st.st_nlink != 1:
        return f"has {st.st_nlink} hard links"
    info = record.copy_named(name)
    if info is None:
        return "was not written by janitor (not in its records)"
    if (st.st_dev, st.st_ino) != (info.dev, info.ino):
        return "is not the file janitor wrote there (another inode)"
    if st.st_size != info.size and not (info.grows and st.st_size > info.size):
        return f"is not the file janitor wrote there ({st.st_size} bytes, janitor wrote {info.size})"
    if not read:
        return None
    fd = _open_candidate(dest_fd, name, os.O_RDONLY)
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (info.dev, info.ino):
            return "was replaced while janitor looked at it"
        fp = _head_fp(fd, info.size) if info.grows else _fingerprint_fd(fd, info.size)
        if fp != info.fp:
            return "does not hold the bytes janitor wrote"
    finally:
        os.close(fd)
    return None


def _open_candidate(dir_fd: int, name: str, flags: int) -> int:
    """openat(name) without following a symlink or blocking on a FIFO; a regular file or an error."""
    fd = os.open(name, flags | O_CANDIDATE, dir_fd=dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise JanitorError(f"{name} is {_kind(st.st_mode)}; not touching it", code="E_UNSAFE")
    return fd


def check_chain(dest_fd: int, base: str, options: CutOptions, record: LogRecord, display: str) -> None:
    """Refuse (ForeignCopy) when a name janitor would rotate is not janitor's copy."""
    pattern = _copy_re(base, options.dateext)
    ours = {c.name for c in record.copies}
    for entry in sorted(os.listdir(dest_fd)):
        m = pattern.fullmatch(entry)
        if not m:
            continue
        in_chain = options.dateext or int(m.group(1)) <= max(options.rotate, 1)
        if not in_chain and entry not in ours:
            continue  # beyond what janitor keeps: not janitor's to touch, and in no way
        why = _why_not_ours(dest_fd, entry, record)
        if why is None or why == "missing":
            continue
        if options.dateext and entry not in ours and why.startswith("was not written"):
            continue  # dated names do not collide; a dated file janitor did not write is left alone
        unsafe = not why.startswith(("was not written", "is not the file", "does not hold"))
        raise ForeignCopy(
            f"{os.path.join(display, entry)} {why}: "
            + ("janitor does not rotate through it" if unsafe else
               "the log seems to be rotated by its writer or another tool; janitor leaves it alone"),
            skip_code="unsafe_copy" if unsafe else "rotated_by_writer")


def _unlink_if(dir_fd: int, name: str, dev: int, ino: int) -> bool:
    """Unlink `name` only while it is still the inode (dev, ino)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if (st.st_dev, st.st_ino) != (dev, ino) or not stat.S_ISREG(st.st_mode):
        return False
    os.unlink(name, dir_fd=dir_fd)
    return True


# --------------------------------------------------------------------------- copying


def _tail_start(fd: int, size: int, options: CutOptions) -> int:
    """Offset where the part that must stay live begins."""
    if options.keep_tail_bytes is not None:
        return max(0, size - options.keep_tail_bytes)
    if options.keep_tail_lines is not None:
        return _start_of_last_lines(fd, size, options.keep_tail_lines)
    return size


def _start_of_last_lines(fd: int, size: int, n: int) -> int:
    """Start of the last `n` complete lines; an unterminated last line always stays too."""
    pos = size
    seen = 0  # newlines seen scanning backwards; the (n+1)th marks the start
    while pos > 0:
        start = max(0, pos - 65536)
        chunk = os.pread(fd, pos - start, start)
        end = len(chunk)
        while True:
            i = chunk.rfind(b"\n", 0, end)
            if i < 0:
                break
            seen += 1
            if seen == n + 1:
                return start + i + 1
            end = i
        pos = start
    return 0


def data_extents(fd: int, end: int) -> list[tuple[int, int]]:
    """The (start, stop) ranges of `fd` below `end` that hold data; holes are left out.

    SEEK_DATA/SEEK_HOLE; a filesystem without them reports the whole range as data.
    """
    extents: list[tuple[int, int]] = []
    off = 0
    try:
        while off < end:
            try:
                data = os.lseek(fd, off, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # only a hole from here to the end of the file
                    break
                raise
            if data >= end:
                break
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
            extents.append((data, hole))
            off = hole
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        return [(0, end)] if end > 0 else []
    return extents


def check_room(dst: int, need: int, what: str, then: str = "not writing it") -> None:
    """Refuse (DiskFull) to write `need` bytes where the filesystem of `dst` has fewer free.

    Counted against the space any account may use (f_bavail), so janitor, as root, never
    eats into root's reserve: a file whose apparent size is far above what it occupies (a
    sparse file, `truncate -s 40G`) would otherwise make root fill the filesystem.
    """
    st = os.fstatvfs(dst)
    free = st.f_bavail * st.f_frsize
    if need > free:
        raise DiskFull(f"no space left for {what}: it needs {need} bytes (data, not counting holes) "
                       f"but only {free} are free there; {then}")


def _copy_sparse(src: int, dst: int, end: int) -> None:
    """Copy src[0:end) into the empty file `dst`, keeping holes as holes (only data is written)."""
    for start, stop in data_extents(src, end):
        _copy_range(src, dst, start, stop, same_offsets=True)
    if os.fstat(src).st_size < end:
        raise FileChanged(f"file shrank below {end} bytes while copying")
    os.ftruncate(dst, end)  # a trailing hole stays a hole


def _copy_range(src: int, dst: int, start: int, end: int, *, same_offsets: bool = False) -> None:
    """Copy src[start:end) to dst, in-kernel when possible: to the same offsets in dst when
    `same_offsets` (what lies between stays a hole), else at dst's current position."""
    off = start
    try:
        while off < end:
            n = os.copy_file_range(src, dst, min(end - off, 1 << 30), off, off if same_offsets else None)
            if n == 0:
                raise FileChanged(f"file shrank to {off} bytes while copying")
            off += n
        return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while off < end:  # filesystems without copy_file_range
        buf = os.pread(src, min(end - off, _CHUNK), off)
        if not buf:
            raise FileChanged(f"file shrank to {off} bytes while copying")
        _write_all(dst, buf, off if same_offsets else None)
        off += len(buf)


def _write_all(fd: int, buf: bytes, offset: int | None = None) -> None:
    view = memoryview(buf)
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[n:]
        if offset is not None:
            offset += n


def _new_scratch(dir_fd: int, name: str) -> int:
    """Create janitor's scratch file `name` (0600, O_EXCL, no symlink) and prove it is ours."""
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | O_CANDIDATE, 0o600, dir_fd=dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
        os.close(fd)
        raise JanitorError(f"scratch file {name} is not janitor's after creating it", code="E_UNSAFE")
    return fd


def _scratch_name(suffix: str = ".tmp") -> str:
    # Fixed length, independent of the log's name: a 255-byte log name still gets one.
    return f".janitor-{secrets.token_hex(12)}{suffix}"


def _adopt_owner(fd: int, st: os.stat_result) -> None:
    """Give a finished copy the log's owner and mode, through its descriptor.

    As root: the log's owner and group. As the directory's owner (asowner): that account
    keeps it, with the log's mode minus what only another owner could have granted.
    """
    if os.geteuid() == 0:
        os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
    else:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o7777)


def _make_copy(src: int, st: os.stat_result, end: int, dest_fd: int, tmp: str, display: str,
               log: str) -> CopyInfo:
    """Durable scratch file `tmp` in dest holding src[0:end); created 0600, moded when complete."""
    try:
        fd = _new_scratch(dest_fd, tmp)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DiskFull(f"no space left in {display} for the rotated copy of {log}; the log was left untouched") from e
        raise
    try:
        # Only the data is written (holes stay holes), and only if it fits: a sparse log of
        # 40 GiB apparent size must not make root fill the filesystem with zeros.
        check_room(fd, sum(stop - start for start, stop in data_extents(src, end)),
                   f"the rotated copy of {log} in {display}", "the log was left untouched")
        _copy_sparse(src, fd, end)
        _adopt_owner(fd, st)
        os.fsync(fd)
        cst = os.fstat(fd)
        info = CopyInfo(tmp, cst.st_dev, cst.st_ino, end, _fingerprint_fd(fd, end), time.time())
    except BaseException as e:
        cst = os.fstat(fd)
        os.close(fd)
        _unlink_if(dest_fd, tmp, cst.st_dev, cst.st_ino)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise DiskFull(
                f"no space left in {display} for the rotated copy of {log} ({end} bytes); the log was left untouched"
            ) from e
        raise
    os.close(fd)
    return info


# --------------------------------------------------------------------------- placing copies


def _first_name(base: str, options: CutOptions, now: float) -> str:
    if options.dateext:
        return f"{base}-{time.strftime('%Y%m%d', time.localtime(now))}"
    return f"{base}.1"


def _place(dest_fd: int, base: str, new: CopyInfo, options: CutOptions, copies: list[CopyInfo],
           now: float) -> tuple[list[CopyInfo], list[str]]:
    """Make room and rename the scratch copy `new` to its rotated name. Runs as the acting account.

    Returns the copies janitor now has (newest first) and the names it dropped. Only copies
    in `copies` (the ledger's, each re-verified) are renamed or unlinked; a name janitor did
    not write is never replaced (renameat2 RENAME_NOREPLACE).
    """
    keep = max(options.rotate, 1)
    record = LogRecord(copies=list(copies))
    first = _first_name(base, options, now)
    dropped: list[str] = []
    kept: list[CopyInfo] = []
    if not options.dateext:
        pattern = _copy_re(base, False)
        for info in sorted(copies, key=lambda c: _index_of(pattern, c.name), reverse=True):
            why = _why_not_ours(dest_fd, info.name, record, expect_present=False, read=False)
            if why is not None:
                raise ForeignCopy(f"{info.name} {why}; janitor does not rotate through it", skip_code="unsafe_copy")
            if not _lexists(dest_fd, info.name):
                continue  # someone removed janitor's copy: nothing to shift
            index = _index_of(pattern, info.name)
            if index >= keep:
                if _unlink_if(dest_fd, info.name, info.dev, info.ino):
                    dropped.append(info.name)
                continue
            suffix = info.name[len(f"{base}.{index}"):]
            target = f"{base}.{index + 1}{suffix}"
            _rename_noreplace(dest_fd, info.name, dest_fd, target)
            kept.append(CopyInfo(target, info.dev, info.ino, info.size, info.fp, info.t, info.grows))
        kept.sort(key=lambda c: -c.t)
    else:
        if any(_lexists(dest_fd, first + s) for s in COMPRESS_SUFFIX.values()):
            n = 1
            while any(_lexists(dest_fd, f"{first}-{n}{s}") for s in COMPRESS_SUFFIX.values()):
                n += 1
            first = f"{first}-{n}"  # a second cut on one day: NAME-YYYYMMDD-1
        survivors = sorted(copies, key=lambda c: -c.t)
        for info in survivors[keep - 1:]:
            if _why_not_ours(dest_fd, info.name, record, expect_present=False, read=False) is None and _unlink_if(
                    dest_fd, info.name, info.dev, info.ino):
                dropped.append(info.name)
        kept = [c for c in survivors[: keep - 1] if _lexists(dest_fd, c.name)]
    _rename_noreplace(dest_fd, new.name, dest_fd, first)
    os.fsync(dest_fd)
    placed = CopyInfo(first, new.dev, new.ino, new.size, new.fp, new.t, new.grows)
    return [placed, *kept], dropped


def _index_of(pattern: re.Pattern[str], name: str) -> int:
    m = pattern.fullmatch(name)
    return int(m.group(1)) if m else 0


# --------------------------------------------------------------------------- compression


def _pending_compression(copies: list[CopyInfo], options: CutOptions) -> list[CopyInfo]:
    """janitor's plain copies that should be compressed now (all but the newest under delay)."""
    if options.compress == "none":
        return []
    plain = [c for c in copies if not c.name.endswith((".gz", ".zst"))]
    ordered = sorted(copies, key=lambda c: -c.t)
    newest = ordered[0].name if ordered else None
    return [c for c in plain if not (options.delay_compress and c.name == newest)]


def _write_compressed(dest_fd: int, info: CopyInfo, tmp: str, how: str) -> CopyInfo:
    """Compress janitor's copy `info` into the scratch file `tmp`. Runs as the acting account."""
    src = _open_candidate(dest_fd, info.name, os.O_RDONLY)
    try:
        st = os.fstat(src)
        if (st.st_dev, st.st_ino) != (info.dev, info.ino) or st.st_nlink != 1:
            raise ForeignCopy(f"{info.name} changed since janitor wrote it; not compressing it", skip_code="unsafe_copy")
        size = st.st_size if info.grows else info.size  # never read past what was there
        out = _new_scratch(dest_fd, tmp)
        try:
            with os.fdopen(out, "wb", closefd=False) as sink:
                if how == "gzip":
                    with gzip.GzipFile(filename=info.name, mode="wb", fileobj=sink, mtime=int(st.st_mtime)) as z:
                        for chunk in _read_bounded(src, size):
                            z.write(chunk)
                else:
                    import zstandard  # lazy: only needed when someone asks for zstd

                    with zstandard.ZstdCompressor().stream_writer(sink, size=size, closefd=False) as z:
                        for chunk in _read_bounded(src, size):
                            z.write(chunk)
            os.fsync(out)
            _adopt_owner(out, st)
            os.fsync(out)
            zst = os.fstat(out)
            return CopyInfo(tmp, zst.st_dev, zst.st_ino, zst.st_size, _fingerprint_fd(out, zst.st_size), info.t)
        except BaseException:
            zst = os.fstat(out)
            _unlink_if(dest_fd, tmp, zst.st_dev, zst.st_ino)
            raise
        finally:
            os.close(out)
    finally:
        os.close(src)


def _read_bounded(fd: int, size: int) -> Iterator[bytes]:
    off = 0
    while off < size:
        buf = os.pread(fd, min(_CHUNK, size - off), off)
        if not buf:
            raise FileChanged(f"copy shrank to {off} bytes while compressing")
        off += len(buf)
        yield buf


def _finish_compression(dest_fd: int, plain: CopyInfo, packed: CopyInfo, target: str) -> None:
    """Rename the compressed scratch into place (never over a name) and drop janitor's plain copy."""
    _rename_noreplace(dest_fd, packed.name, dest_fd, target)
    os.fsync(dest_fd)
    _unlink_if(dest_fd, plain.name, plain.dev, plain.ino)


# --------------------------------------------------------------------------- the session


@dataclass
class _Where:
    """The directories of one cut and the account that may create names in them."""

    dir_fd: int  # holds the live log
    name: str
    dest_fd: int  # holds the copies (the same directory unless olddir)
    display: str  # the live log's path, for messages
    dest_display: str
    creds: Credentials
    ledger: Ledger
    key: str

    def act(self, step: Callable[[], T]) -> T:
        """Run a step that creates, renames or unlinks names, as the acting account."""
        return run_as(self.creds, step)

    def shown(self, name: str) -> str:
        return os.path.join(self.dest_display, name)


def cut_log_at(
    dir_fd: int,
    name: str,
    options: CutOptions,
    *,
    state_dir: str | None,
    display: str,
    dest_fd: int | None = None,
    dest_display: str | None = None,
    expect: tuple[int, int] | None = None,
    max_size: int | None = None,
    creds: Credentials = ROOT,
    now: float | None = None,
) -> CutResult:
    """Cut the log `name` in the directory `dir_fd` according to `options`.

    `dest_fd` is the directory for the copies (olddir; default: the log's). `expect` is the
    (dev, ino) the plan saw and `max_size` its size: at most that much is copied and cut.
    `creds` is whom to create and rename names as (janitor.asowner). `display` is the log's
    path as the operator knows it; no path string is ever opened.
    """
    problems = validate_options(options)
    if problems:
        raise ValueError("; ".join(problems))
    ledger = _ledger_for(state_dir)
    dfd = dir_fd if dest_fd is None else dest_fd
    where = _Where(dir_fd, name, dfd, display, dest_display or os.path.dirname(display), creds, ledger,
                   Ledger.key(dfd, name))
    now = time.time() if now is None else now
    record = ledger.load(where.key)
    _recover(where, options, record)
    if options.mode == "rename":
        return _cut_rename(where, options, record, expect, now)
    return _cut_in_place(where, options, record, expect, max_size, now)


def _open_log(where: _Where, expect: tuple[int, int] | None) -> tuple[int, os.stat_result]:
    """The live log, opened through its directory: a regular file with one link, the planned inode."""
    try:
        lst = os.stat(where.name, dir_fd=where.dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise JanitorError(f"{where.display} no longer exists", code="E_VANISHED") from None
    if stat.S_ISLNK(lst.st_mode):
        raise JanitorError(f"{where.display} is a symlink; refusing to cut through it", code="E_UNSAFE")
    if not stat.S_ISREG(lst.st_mode):
        raise JanitorError(f"{where.display} is {_kind(lst.st_mode)}, not a regular file", code="E_UNSAFE")
    try:
        fd = os.open(where.name, os.O_RDWR | O_CANDIDATE, dir_fd=where.dir_fd)  # no O_APPEND: pwrite honours offsets
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise JanitorError(f"{where.display} is a symlink; refusing to cut through it", code="E_UNSAFE") from e
        raise JanitorError(f"cannot open {where.display}: {e.strerror}") from e
    st = os.fstat(fd)
    why = None
    if not stat.S_ISREG(st.st_mode):
        why = f"is {_kind(st.st_mode)}, not a regular file"
    elif (st.st_dev, st.st_ino) != (lst.st_dev, lst.st_ino) or (
            expect is not None and (st.st_dev, st.st_ino) != expect):
        why = "was replaced by another file"
    elif st.st_nlink > 1 and not links_allowed(where.dir_fd, where.creds):
        # A second name may be a user's hard link to a file they cannot write (/etc/shadow where
        # protected_hardlinks is off): cutting it would cut that file. logrotate refuses too.
        why = f"has {st.st_nlink} hard links; refusing to cut it"
    if why is not None:
        os.close(fd)
        raise JanitorError(f"{where.display} {why}", code="E_UNSAFE")
    return fd, st


_NAME_MAX = 255


def _check_copy_names(where: _Where, options: CutOptions) -> None:
    """Refuse, before anything is touched, a log whose copies' names would not fit (NAME_MAX)."""
    if options.rotate == 0:
        return
    suffix = COMPRESS_SUFFIX[options.compress]
    longest = (f"{where.name}-YYYYMMDD-99{suffix}" if options.dateext
               else f"{where.name}.{options.rotate}{suffix}")
    if len(os.fsencode(longest)) > _NAME_MAX:
        raise JanitorError(f"{where.display}: the name is too long for its rotated copies ({longest!r} would "
                           f"exceed {_NAME_MAX} bytes); not cutting it", code="E_NAME_TOO_LONG")


def _check_reader(where: _Where, st: os.stat_result) -> None:
    """Refuse to copy a log that the acting account does not own (asowner: the directory's owner).

    A copy made as that account belongs to it: copying root's 0600 log in a directory a
    service account owns would hand the account the log's content (and, in mode rename, the
    new log the writer fills next); copying a log it may read still lets it rewrite the
    rotated history of a log it could not write. logrotate, which opens the log as its `su`
    user, fails the same way. Acting as root (a root-only directory), nothing is handed over.
    """
    creds = where.creds
    if creds.is_root or st.st_uid == creds.uid:
        return
    mode = st.st_mode
    readable = bool(mode & stat.S_IROTH or (mode & stat.S_IRGRP and st.st_gid == creds.gid))
    what = ("does not own the log (its copies would let that account rewrite the log's history)" if readable
            else "not read the log")
    raise JanitorError(
        f"{where.display} belongs to uid {st.st_uid} (mode {stat.S_IMODE(mode):o}) but its rotated copies would "
        f"be made as {creds.describe()}, who may write the directory but {what}: not rotating it "
        f"(set `su:` to the log's owner, or give the directory to the log's owner)", code="E_UNSAFE_DIR")


def _note_live(where: _Where, record: LogRecord, st: os.stat_result) -> list[str]:
    """A warning when the live log is another inode than at janitor's last cut."""
    if record.live is not None and record.live != (st.st_dev, st.st_ino):
        return [f"{where.display} is another file than at janitor's last cut (its writer or another tool "
                f"rotated or recreated it)"]
    return []


def _cut_in_place(where: _Where, options: CutOptions, record: LogRecord, expect: tuple[int, int] | None,
                  max_size: int | None, now: float) -> CutResult:
    _check_copy_names(where, options)
    fd, st = _open_log(where, expect)
    try:
        if options.rotate > 0:
            _check_reader(where, st)
            check_chain(where.dest_fd, where.name, options, record, where.dest_display)
        warnings = _note_live(where, record, st) + _link_note(where, st)
        if not options.allow_non_append_writers:
            pids = non_append_writers(st.st_dev, st.st_ino)
            if pids:
                raise NonAppendWriter(
                    f"{where.display} is open for writing without O_APPEND by pid "
                    f"{', '.join(map(str, pids))}: after a cut that writer keeps its old "
                    f"offset and leaves a NUL-filled sparse head (logrotate #363/#286). "
                    f"Open the log in append mode (shell '>>', not '>'), use mode rename, "
                    f"or set allow_non_append_writers"
                )
        size = st.st_size if max_size is None else min(st.st_size, max_size)
        tail = _tail_start(fd, size, options)
        method = predict_method(options, st.st_dev)
        if method == "collapse-range":
            bs = _block_size(fd)
            # The kernel refuses a collapse reaching EOF, hence size - 1.
            cut = (min(tail, st.st_size - 1) // bs) * bs if size else 0
        else:
            cut = tail
        if cut <= 0:
            return CutResult(where.display, method, st.st_size, 0, st.st_size, None, (), tuple(warnings))

        new: CopyInfo | None = None
        if options.rotate > 0:
            # The copy stays under a scratch name until the live file has lost those bytes; the
            # ledger notes the pending cut before the live file is touched, so that after a
            # crash recovery can tell whether the cut happened (keep the copy) or not (drop it).
            tmp = _scratch_name()
            record.pending = {"kind": "cut", "tmp": tmp, "uid": _acting_uid(where)}
            where.ledger.save(where.key, record)
            new = where.act(lambda: _make_copy(fd, st, cut, where.dest_fd, tmp, where.dest_display,
                                                       where.display))
            record.pending = {"kind": "cut", "tmp": tmp, "uid": _acting_uid(where), "copy": new.as_json(),
                              "cut": cut, "size": st.st_size, "dev": st.st_dev, "ino": st.st_ino,
                              "head": _probe(fd, 0), "next": _probe(fd, cut)}
            where.ledger.save(where.key, record)

        try:
            if method == "collapse-range":
                try:
                    _fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, cut)
                    after, window = os.fstat(fd).st_size, 0.0
                except OSError as e:
                    if e.errno not in _FALLBACK_ERRNOS:
                        raise
                    method = "copy-truncate"
                    after, window = _move_down_and_truncate(fd, cut)
            else:
                after, window = _move_down_and_truncate(fd, cut)
        except BaseException as e:
            # Collapse is all-or-nothing: the live file is whole, drop the copy or those bytes
            # would show up twice. A copy-truncate that failed half way moved some bytes
            # already: keep the copy (duplicates, never a loss).
            if new is not None:
                if method == "collapse-range":
                    dropped = new
                    with contextlib.suppress(OSError, JanitorError):
                        where.act(lambda: _unlink_if(where.dest_fd, dropped.name, dropped.dev, dropped.ino))
                    record.pending = None
                    where.ledger.save(where.key, record)
                else:
                    with contextlib.suppress(OSError, JanitorError):
                        _place_new(where, options, record, new, now, st, [])
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise DiskFull(f"no space left to collapse {where.display}; left untouched") from e
            raise
        rotated: str | None = None
        if new is not None:
            rotated = _place_new(where, options, record, new, now, st, warnings)
        else:
            record.live, record.last_rotated = (st.st_dev, st.st_ino), now
            where.ledger.save(where.key, record)
    finally:
        os.close(fd)

    if window > _SLOW_WINDOW:
        # ftruncate waited for the inode lock while the writer kept taking it.
        warnings.append(
            f"the truncate of {where.display} took {window * 1000:.1f} ms; lines written meanwhile are lost"
        )
    compressed, more = _compress_all(where, options, record)
    warnings += more
    if rotated is not None:
        packed = rotated + COMPRESS_SUFFIX[options.compress]
        if where.shown(packed) in compressed:
            rotated = packed
        rotated = where.shown(rotated)
    return CutResult(where.display, method, st.st_size, cut, after, rotated, tuple(compressed), tuple(warnings))


def _acting_uid(where: _Where) -> int:
    return os.geteuid() if where.creds.is_root else where.creds.uid


def _probe(fd: int, offset: int) -> str:
    return hashlib.sha256(os.pread(fd, _PROBE, offset)).hexdigest()


def _place_new(where: _Where, options: CutOptions, record: LogRecord, new: CopyInfo, now: float,
               st: os.stat_result, warnings: list[str]) -> str:
    try:
        copies, _ = where.act(lambda: _place(where.dest_fd, where.name, new, options, record.copies, now))
    except (ForeignCopy, FileExistsError) as exc:
        # Something else took the copy's name during the cut (a writer that rotates its log
        # itself): the prefix is only in janitor's scratch copy. Park it under a name no
        # rotator uses and say so, rather than lose it or fight for the name.
        parked = f"{where.name}.janitor-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{new.ino}"
        where.act(lambda: _rename_noreplace(where.dest_fd, new.name, where.dest_fd, parked))
        record.pending = None
        where.ledger.save(where.key, record)
        warnings.append(f"the rotated copy of {where.display} was kept as {where.shown(parked)}: "
                        f"{exc}")
        return parked
    record.copies = copies
    record.pending = None
    record.live, record.last_rotated = (st.st_dev, st.st_ino), now
    where.ledger.save(where.key, record, durable=False)
    return copies[0].name


def _compress_all(where: _Where, options: CutOptions, record: LogRecord,
                  skip: Callable[[CopyInfo], bool] | None = None) -> tuple[list[str], list[str]]:
    done: list[str] = []
    warnings: list[str] = []
    for info in _pending_compression(record.copies, options):
        if skip is not None and skip(info):
            continue
        target = info.name + COMPRESS_SUFFIX[options.compress]
        tmp = _scratch_name()
        try:
            if _why_not_ours(where.dest_fd, info.name, record) is not None:
                continue  # changed under us; it stays as it is (never removed)
            if _lexists(where.dest_fd, target):
                warnings.append(f"not compressing {where.shown(info.name)}: {where.shown(target)} exists already")
                continue
            record.pending = {"kind": "compress", "tmp": tmp, "plain": info.as_json(), "uid": _acting_uid(where)}
            where.ledger.save(where.key, record)
            packed = where.act(lambda: _write_compressed(where.dest_fd, info, tmp, options.compress))  # noqa: B023
            record.pending = {**record.pending, "packed": packed.as_json(), "target": target}
            where.ledger.save(where.key, record)
            where.act(lambda: _finish_compression(where.dest_fd, info, packed, target))  # noqa: B023
            _settle_compression(record, info, packed, target)
            where.ledger.save(where.key, record)
            done.append(where.shown(target))
        except (OSError, JanitorError) as e:
            # The cut already happened; the plain copy is intact and retried next time.
            what = "no space left" if isinstance(e, OSError) and e.errno == errno.ENOSPC else str(e)
            warnings.append(f"could not compress {where.shown(info.name)} (rotated copy of {where.display}): {what}")
            with contextlib.suppress(OSError, JanitorError):
                _recover(where, options, record)
    return done, warnings


def _settle_compression(record: LogRecord, plain: CopyInfo, packed: CopyInfo, target: str) -> None:
    record.copies = [CopyInfo(target, packed.dev, packed.ino, packed.size, packed.fp, plain.t)
                     if c.name == plain.name else c for c in record.copies]
    record.pending = None


# --------------------------------------------------------------------------- crash recovery


def _recover(where: _Where, options: CutOptions, record: LogRecord) -> str | None:
    """Finish or undo what a killed run left in the ledger's `pending`; None if nothing was."""
    pending = record.pending
    if not pending:
        return None
    outcome: str | None = None
    tmp = str(pending.get("tmp", ""))
    if not re.fullmatch(r"\.janitor-[0-9a-f]{24}\.tmp", tmp):
        record.pending = None
        where.ledger.save(where.key, record)
        return None
    uid = int(pending.get("uid", -1))

    def drop_scratch(info: dict[str, Any] | None) -> None:
        # Ours if it is the inode we recorded, or (killed before we could record it) a regular
        # file with one link owned by the account that created it under this random name.
        def step() -> None:
            try:
                st = os.stat(tmp, dir_fd=where.dest_fd, follow_symlinks=False)
            except FileNotFoundError:
                return
            if info is not None:
                _unlink_if(where.dest_fd, tmp, int(info["dev"]), int(info["ino"]))
            elif stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_uid == uid:
                _unlink_if(where.dest_fd, tmp, st.st_dev, st.st_ino)
        where.act(step)

    if pending.get("kind") == "cut":
        copy = pending.get("copy")
        if copy is None:
            drop_scratch(None)
            outcome = "dropped"
        else:
            info = CopyInfo(**copy)
            if _prefix_was_cut(where, pending):
                placeable = where.act(lambda: _lexists(where.dest_fd, tmp))
                if placeable:
                    _place_new(where, CutOptions(**{**options.__dict__, "rotate": max(options.rotate, 1)}),
                               record, info, info.t, os.fstat(where.dir_fd), [])
                    record.live = None
                else:  # killed after placing the copy, before the ledger said so
                    _resync(where, options, record, [info])
                outcome = "kept"
            else:
                drop_scratch(copy)
                outcome = "dropped"
    elif pending.get("kind") == "compress":
        plain = CopyInfo(**pending["plain"])
        packed = CopyInfo(**pending["packed"]) if pending.get("packed") else None
        target = str(pending.get("target", ""))
        if packed is not None and target:
            try:
                st = os.stat(target, dir_fd=where.dest_fd, follow_symlinks=False)
                moved = (st.st_dev, st.st_ino) == (packed.dev, packed.ino)
            except FileNotFoundError:
                moved = False
            if moved:  # killed between the rename and the unlink of janitor's plain copy
                where.act(lambda: _unlink_if(where.dest_fd, plain.name, plain.dev, plain.ino))
                _settle_compression(record, plain, packed, target)
            else:
                drop_scratch(pending["packed"])
        else:
            drop_scratch(None)
    record.pending = None
    where.ledger.save(where.key, record)
    return outcome


def _resync(where: _Where, options: CutOptions, record: LogRecord, extra: list[CopyInfo]) -> None:
    """Rename the ledger's copies after the names their inodes have now (a run killed between
    renaming copies and saving the ledger): identity is (dev, ino), never a name."""
    by_inode = {(c.dev, c.ino): c for c in [*record.copies, *extra]}
    pattern = _copy_re(where.name, options.dateext)
    found: list[CopyInfo] = []
    for entry in os.listdir(where.dest_fd):
        if not pattern.fullmatch(entry):
            continue
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(entry, dir_fd=where.dest_fd, follow_symlinks=False)
            info = by_inode.get((st.st_dev, st.st_ino))
            if info is not None and stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                found.append(CopyInfo(entry, info.dev, info.ino, info.size, info.fp, info.t, info.grows))
    record.copies = sorted(found, key=lambda c: -c.t)


def _prefix_was_cut(where: _Where, info: dict[str, Any]) -> bool:
    try:
        fd = os.open(where.name, os.O_RDONLY | O_CANDIDATE, dir_fd=where.dir_fd)
    except OSError:
        return True  # the log is gone: the copy may be the only holder of those bytes
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (info.get("dev"), info.get("ino")):
            return True
        if st.st_size < int(info.get("size", 0)):
            return True  # append-only logs only grow; shorter means the cut happened
        head = _probe(fd, 0)
        # still starts with the old head (and that is not also what follows the cut): not cut
        return not (head == info.get("head") and head != info.get("next"))
    finally:
        os.close(fd)


def recover_cut_at(dir_fd: int, name: str, options: CutOptions, *, state_dir: str | None, display: str,
                   dest_fd: int | None = None, creds: Credentials = ROOT) -> str | None:
    """Finish or undo a cut (or compression) that a crash interrupted; None if there was none.

    Returns "kept" when the live file had already lost the prefix (the copy is made NAME.1),
    "dropped" when it had not (janitor's scratch copy is removed: the live file still has
    every byte). When the two cannot be told apart the copy is kept: duplicates, never loss.
    Only what janitor's ledger proves janitor wrote is ever removed.
    """
    ledger = _ledger_for(state_dir)
    dfd = dir_fd if dest_fd is None else dest_fd
    where = _Where(dir_fd, name, dfd, display, os.path.dirname(display), creds, ledger, Ledger.key(dfd, name))
    return _recover(where, options, ledger.load(where.key))


# --------------------------------------------------------------------------- path entry points


@contextlib.contextmanager
def _dirs_of(path: str | os.PathLike[str], options: CutOptions) -> Iterator[tuple[int, int | None, str, str]]:
    log = os.path.abspath(os.fspath(path))
    dir_fd = os.open(os.path.dirname(log), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    dest_fd: int | None = None
    try:
        if options.olddir:
            try:
                dest_fd = os.open(options.olddir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                raise JanitorError(f"olddir {options.olddir} for {log} does not exist", code="E_OLDDIR") from None
        yield dir_fd, dest_fd, log, os.path.abspath(options.olddir) if options.olddir else os.path.dirname(log)
    finally:
        os.close(dir_fd)
        if dest_fd is not None:
            os.close(dest_fd)


def cut_log(path: str | os.PathLike[str], options: CutOptions, *, state_dir: str | None = None) -> CutResult:
    """`cut_log_at` for a path (library and benchmark use): the directory is opened once and the
    acting account chosen as janitor.asowner says. Without `state_dir` the ledger lives in a
    private directory of this process."""
    problems = validate_options(options)
    if problems:
        raise ValueError("; ".join(problems))
    with _dirs_of(path, options) as (dir_fd, dest_fd, log, dest_display):
        creds = credentials_for_dir(dest_fd if dest_fd is not None else dir_fd, dest_display, su=None,
                                    policy="cut_log")
        return cut_log_at(dir_fd, os.path.basename(log), options, state_dir=state_dir, display=log,
                          dest_fd=dest_fd, dest_display=dest_display, creds=creds)


def recover_cut(path: str | os.PathLike[str], options: CutOptions, *, state_dir: str | None = None) -> str | None:
    """`recover_cut_at` for a path."""
    with _dirs_of(path, options) as (dir_fd, dest_fd, log, _):
        return recover_cut_at(dir_fd, os.path.basename(log), options, state_dir=state_dir, display=log,
                              dest_fd=dest_fd)


# --------------------------------------------------------------------------- copy-truncate


@contextlib.contextmanager
def _realtime_priority() -> Iterator[None]:
    """Run the block as a SCHED_FIFO task when allowed (root / CAP_SYS_NICE).

    ftruncate and our pwrites need the inode lock that every append of the writer takes.
    A normal task waiting for it loses the race to a writer in a tight loop until the
    kernel's rwsem hands the lock over after about a tick (1-5 ms); a real-time waiter
    gets the hand-off at once (rwsem_try_write_lock). That shrinks the loss window from
    milliseconds to microseconds. The block is short and bounded; without the privilege
    nothing changes.
    """
    try:
        old_policy = os.sched_getscheduler(0)
        old_param = os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (OSError, AttributeError):
        yield
        return
    try:
        yield
    finally:
        os.sched_setscheduler(0, old_policy, old_param)


def _move_down_and_truncate(fd: int, start: int) -> tuple[int, float]:
    """Move fd[start:EOF) to offset 0 until no new bytes arrive, then cut.

    Returns the new size and how long the loss window (final fstat to ftruncate done)
    stayed open. Nothing else runs in that window. Bytes that arrive while we move are
    moved too, so lines keep their order.
    """
    with _realtime_priority():
        return _move_down_and_truncate_now(fd, start)


def _move_down_and_truncate_now(fd: int, start: int) -> tuple[int, float]:
    src, dst = start, 0
    deadline = _MOVE_DEADLINE
    give_up = time.monotonic() + deadline
    while True:
        t0 = time.perf_counter()
        size = os.fstat(fd).st_size
        if size == src:
            os.ftruncate(fd, dst)
            return dst, time.perf_counter() - t0
        if size < src:
            raise FileChanged(f"file shrank below {src} bytes while being cut (another rotator?)")
        if time.monotonic() > give_up:
            # A file that grows faster than we move it (or forever): stop. What was moved is
            # there twice (duplicates), nothing is lost, and the run goes on.
            raise FileChanged(f"the file kept growing faster than it could be moved for {deadline:.0f}s; "
                              "stopped (the moved part is duplicated in the live file, nothing lost)")
        while src < size:
            buf = os.pread(fd, min(size - src, _CHUNK), src)
            if not buf:
                break
            _write_all(fd, buf, dst)  # dst < src: never overwrites bytes not yet moved
            src += len(buf)
            dst += len(buf)


# --------------------------------------------------------------------------- rename mode


def _cut_rename(where: _Where, options: CutOptions, record: LogRecord, expect: tuple[int, int] | None,
                now: float) -> CutResult:
    _check_copy_names(where, options)
    lst = _lstat_log(where, expect)
    _check_reader(where, lst)
    if os.fstat(where.dest_fd).st_dev != lst.st_dev:
        raise JanitorError(
            f"olddir {where.dest_display} is on another filesystem than {where.display}; mode rename needs both "
            f"on one filesystem"
        )
    if options.rotate > 0:
        check_chain(where.dest_fd, where.name, options, record, where.dest_display)
    warnings = _note_live(where, record, lst) + _link_note(where, lst)
    fd = _open_candidate(where.dir_fd, where.name, os.O_RDONLY)
    try:
        head = _head_fp(fd, lst.st_size)
    finally:
        os.close(fd)
    moved_away = CopyInfo(_scratch_name(".old"), lst.st_dev, lst.st_ino, lst.st_size, head, now, grows=True)

    def rename_and_recreate() -> None:
        _rename_noreplace(where.dir_fd, where.name, where.dest_fd, moved_away.name)
        st = os.stat(moved_away.name, dir_fd=where.dest_fd, follow_symlinks=False)
        if (st.st_dev, st.st_ino) != (lst.st_dev, lst.st_ino):
            raise FileChanged(f"{where.display} was replaced during the rotation")
        _create_like(where.dir_fd, where.name, lst, where.display)
        os.fsync(where.dir_fd)
        if where.dest_fd != where.dir_fd:
            os.fsync(where.dest_fd)

    record.pending = None
    where.act(rename_and_recreate)
    rotated: str | None = None
    if options.rotate > 0:
        copies, _ = where.act(lambda: _place(where.dest_fd, where.name, moved_away, options, record.copies, now))
        record.copies = copies
        rotated = copies[0].name
    record.live, record.last_rotated = _new_live(where), now
    where.ledger.save(where.key, record)
    _reopen(where.display, options, lst)

    old = rotated if rotated is not None else moved_away.name
    # The service may still write to the old inode until it has reopened; compressing or
    # deleting it earlier would lose those lines.
    compress_now = options.compress != "none" and not options.delay_compress
    if options.rotate == 0 or compress_now:
        settled = _wait_writers_gone(lst.st_dev, lst.st_ino, _REOPEN_WAIT)
    else:
        settled = not _writers(lst.st_dev, lst.st_ino)
    if not settled and (options.rotate == 0 or compress_now):
        warnings.append(f"a process still writes to the old {where.display} after {_REOPEN_WAIT:.0f}s")
    moved = _size_at(where.dest_fd, old, lst)  # includes what the service wrote before it reopened
    if options.rotate == 0:
        if settled:
            where.act(lambda: _unlink_if(where.dest_fd, old, lst.st_dev, lst.st_ino))
        else:
            warnings.append(f"kept {where.shown(old)} because it is still being written")
    compressed: list[str] = []
    if options.rotate > 0:
        # Compress only copies nobody writes any more; the new one only once settled.
        def still_open(info: CopyInfo) -> bool:
            if info.name == rotated:
                return not settled
            return info.grows and bool(_writers(info.dev, info.ino))

        compressed, more = _compress_all(where, options, record, skip=still_open)
        warnings += more
        if rotated is not None:
            packed = where.shown(rotated + COMPRESS_SUFFIX[options.compress])
            rotated = packed if packed in compressed else where.shown(rotated)
    return CutResult(where.display, "rename", moved, moved, 0, rotated, tuple(compressed), tuple(warnings))


def _lstat_log(where: _Where, expect: tuple[int, int] | None) -> os.stat_result:
    try:
        st = os.stat(where.name, dir_fd=where.dir_fd, follow_symlinks=False)
    except OSError as e:
        raise JanitorError(f"cannot stat {where.display}: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode):
        raise JanitorError(f"{where.display} is not a regular file (symlinks are not followed)", code="E_UNSAFE")
    if expect is not None and (st.st_dev, st.st_ino) != expect:
        raise JanitorError(f"{where.display} was replaced by another file", code="E_UNSAFE")
    if st.st_nlink > 1 and not links_allowed(where.dir_fd, where.creds):
        raise JanitorError(f"{where.display} has {st.st_nlink} hard links; refusing to cut it", code="E_UNSAFE")
    return st


def links_allowed(dir_fd: int, creds: Credentials) -> bool:
    """True when a log with more than one hard link may be cut: janitor acts as root in a
    directory only root can write.

    There every name is root's own choice, so the log's name is not a link someone planted to
    a file they could not write; a second name elsewhere (any user may link a file of the same
    filesystem from /tmp) is that same inode's and must not stop its rotation. Where another
    account can write the directory, a second link is refused (it may be /etc/shadow).
    """
    return creds.is_root and os.geteuid() == 0 and writers_of(os.fstat(dir_fd)) is None


def _link_note(where: _Where, st: os.stat_result) -> list[str]:
    if st.st_nlink <= 1:
        return []
    return [f"{where.display} has {st.st_nlink} hard links; cut anyway: only root can write its directory, "
            f"so the other names are links to this log made elsewhere"]


def _size_at(dir_fd: int, name: str, want: os.stat_result | None) -> int:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return 0
    if want is not None and (st.st_dev, st.st_ino) != (want.st_dev, want.st_ino):
        return want.st_size
    return st.st_size


def _new_live(where: _Where) -> tuple[int, int] | None:
    try:
        st = os.stat(where.name, dir_fd=where.dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def _create_like(dir_fd: int, name: str, st: os.stat_result, display: str) -> None:
    """New empty log owned like the old one; 0600 until fchmod so it is never too open."""
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_CANDIDATE, 0o600, dir_fd=dir_fd)
    except FileExistsError:
        # The service itself recreated it (O_CREAT on reopen); fine if it is a plain file.
        if not stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise JanitorError(f"{display} was replaced by a non-regular file during rotation") from None
        return
    try:
        _adopt_owner(fd, st)
    finally:
        os.close(fd)


def _read_pid(pidfile: str, log_uid: int) -> int:
    """The pid in `pidfile`, read without following a symlink, blocking on a FIFO or reading much.

    Only from a regular file with one link, owned by root or by the log's owner and writable
    by nobody else (a pidfile any other account can write names any pid it likes), and only a
    pid above 1 (0 is janitor's own process group, -1 every process, 1 init).
    """
    fd = os.open(pidfile, os.O_RDONLY | O_CANDIDATE)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_nlink != 1:
            raise ValueError(f"it has {st.st_nlink} hard links")
        if st.st_uid not in (0, log_uid):
            raise ValueError(f"it belongs to uid {st.st_uid}, neither root nor the log's owner (uid {log_uid})")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ValueError(f"other accounts may write it (mode {stat.S_IMODE(st.st_mode):o})")
        text = os.read(fd, _PIDFILE_MAX).split()[0]
    finally:
        os.close(fd)
    if not text.isdigit() or int(text) <= 1:
        raise ValueError(f"{text[:20]!r} is not a process id above 1")
    return int(text)


def _reopen(log: str, options: CutOptions, old: os.stat_result | None = None) -> None:
    """Ask the log's writer to reopen it: the `reopen` signal to the pidfile's pid, `postrotate`.

    The signal goes only to a process that holds the old log inode `old` open for writing
    (a /proc scan): a pidfile naming anything else is refused with one line.
    """
    if options.reopen_signal is not None and options.reopen_pidfile:
        sig = _signal_of(options.reopen_signal)
        assert sig is not None  # validate_options checked it
        log_uid = old.st_uid if old is not None else 0
        try:
            pid = _read_pid(options.reopen_pidfile, log_uid)
        except (OSError, ValueError, IndexError) as e:
            raise JanitorError(f"cannot read a pid from {options.reopen_pidfile}: {e}; not signalling") from e
        if old is not None and pid not in _writers(old.st_dev, old.st_ino):
            raise JanitorError(
                f"pid {pid} from {options.reopen_pidfile} does not hold {log} open for writing; "
                f"not sending it {sig.name}", code="E_UNSAFE")
        try:
            os.kill(pid, sig)
        except OSError as e:
            raise JanitorError(f"cannot send {sig.name} to pid {pid} for {log}: {e}") from e
    if options.postrotate:
        argv = list(options.postrotate)
        try:
            done = subprocess.run(argv, shell=False, timeout=_POSTROTATE_TIMEOUT, check=False,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise JanitorError(
                f"postrotate {argv[0]} for {log} timed out after {_POSTROTATE_TIMEOUT:.0f}s"
            ) from e
        except OSError as e:
            raise JanitorError(f"postrotate {argv[0]} for {log} failed to start: {e}") from e
        if done.returncode != 0:
            raise JanitorError(
                f"postrotate {argv[0]} for {log} exited with status {done.returncode}"
            )


def _wait_writers_gone(dev: int, ino: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _writers(dev, ino):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)  # polling /proc is the only way to learn the service reopened
    return True
