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

Rotated copies are ``NAME.1`` (newest) .. ``NAME.N``, plus ``.gz``/``.zst`` when compressed.
Compression only happens after the cut. Concatenating the copies oldest to newest
(decompressed) and then the live file gives every byte written exactly once.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import gzip
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from janitor.errors import DiskFull, FileChanged, JanitorError

__all__ = [
    "CutOptions",
    "CutResult",
    "NonAppendWriter",
    "collapse_range_supported",
    "cut_log",
    "non_append_writers",
    "plan_method",
    "recover_cut",
    "validate_options",
]

FALLOC_FL_COLLAPSE_RANGE = 0x08
COMPRESS_SUFFIX = {"none": "", "gzip": ".gz", "zstd": ".zst"}
MODES = ("copytruncate", "rename")
_CHUNK = 1 << 20
_POSTROTATE_TIMEOUT = 60.0
_SLOW_WINDOW = 0.001  # copy-truncate: warn when fstat->ftruncate took longer than this
_REOPEN_WAIT = 5.0  # rename mode: how long to wait for the service to let go of NAME.1


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
    return problems


def _signal_of(name: str) -> signal.Signals | None:
    name = name.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return signal.Signals[name]
    except KeyError:
        return None


# --------------------------------------------------------------------------- /proc scan


def _fds_on(dev: int, ino: int) -> list[tuple[int, int]]:
    """(pid, open flags) of every fd in any other process that refers to dev/ino."""
    me = os.getpid()
    found: list[tuple[int, int]] = []
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        if pid == me:
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or not ours to look at
            continue
        for fd in fds:
            try:
                st = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if st.st_dev != dev or st.st_ino != ino:
                continue
            flags = _fd_flags(pid, fd)
            if flags is not None:
                found.append((pid, flags))
    return found


def _fd_flags(pid: int, fd: str) -> int | None:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _writes(flags: int) -> bool:
    return (flags & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)


def non_append_writers(dev: int, ino: int) -> list[int]:
    """Pids (not ours) holding dev/ino open for writing without O_APPEND."""
    return sorted({pid for pid, fl in _fds_on(dev, ino) if _writes(fl) and not fl & os.O_APPEND})


def _writers(dev: int, ino: int) -> list[int]:
    return sorted({pid for pid, fl in _fds_on(dev, ino) if _writes(fl)})


# --------------------------------------------------------------------------- collapse-range

_libc_fallocate = None


def _fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    global _libc_fallocate
    if _libc_fallocate is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.fallocate
        func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        func.restype = ctypes.c_int
        _libc_fallocate = func
    if _libc_fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


_collapse_cache: dict[int, bool] = {}
_FALLBACK_ERRNOS = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS}


def collapse_range_supported(path: str | os.PathLike[str]) -> bool:
    """Whether FALLOC_FL_COLLAPSE_RANGE works where `path` lives (probed once per st_dev).

    The probe collapses the first block of a two-block scratch file next to `path`; a
    directory we cannot write to counts as unsupported (and is not cached).
    """
    p = Path(path)
    probe_dir = p if p.is_dir() else p.parent
    dev = os.stat(probe_dir).st_dev
    if dev in _collapse_cache:
        return _collapse_cache[dev]
    bs = _block_size(probe_dir)
    try:
        fd, name = tempfile.mkstemp(dir=probe_dir, prefix=".janitor-probe-")
    except OSError:
        return False
    try:
        os.write(fd, b"a" * bs + b"b" * bs)
        _fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, bs)
        ok = os.fstat(fd).st_size == bs and os.pread(fd, 1, 0) == b"b"
    except OSError as e:
        if e.errno not in _FALLBACK_ERRNOS:
            return False  # e.g. ENOSPC: do not remember a transient answer
        ok = False
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)
    _collapse_cache[dev] = ok
    return ok


def _block_size(path: str | os.PathLike[str]) -> int:
    return os.statvfs(path).f_bsize or 4096


# --------------------------------------------------------------------------- planning


def plan_method(path: str | os.PathLike[str], options: CutOptions) -> str:
    """The method cut_log would use: 'collapse-range', 'copy-truncate' or 'rename'."""
    if options.mode == "rename":
        return "rename"
    return "collapse-range" if collapse_range_supported(path) else "copy-truncate"


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


# --------------------------------------------------------------------------- copying


def _copy_range(src: int, dst: int, start: int, end: int) -> None:
    """Copy src[start:end) to the current position of dst, in-kernel when possible."""
    off = start
    try:
        while off < end:
            n = os.copy_file_range(src, dst, min(end - off, 1 << 30), off)
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
        _write_all(dst, buf)
        off += len(buf)


def _write_all(fd: int, buf: bytes, offset: int | None = None) -> None:
    view = memoryview(buf)
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[n:]
        if offset is not None:
            offset += n


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _adopt_owner(fd: int, st: os.stat_result) -> None:
    """Give a copy the log's owner and mode, so rotation never widens who may read it."""
    if os.geteuid() == 0:
        os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))


def _write_copy(src: int, st: os.stat_result, end: int, dest_dir: str, log: str) -> str:
    """Durable temp file in dest_dir holding src[0:end); DiskFull leaves nothing behind."""
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{os.path.basename(log)}.", suffix=".tmp")
    try:
        _copy_range(src, fd, 0, end)
        _adopt_owner(fd, st)
        os.fsync(fd)
    except BaseException as e:
        os.close(fd)
        os.unlink(tmp)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise DiskFull(
                f"no space left in {dest_dir} for the rotated copy of {log} "
                f"({end} bytes); the log was left untouched"
            ) from e
        raise
    os.close(fd)
    return tmp


# --------------------------------------------------------------------------- rotation


def _copy_name(base: str, index: int, suffix: str = "") -> str:
    return f"{base}.{index}{suffix}"


def _existing_copies(dest_dir: str, base: str) -> list[tuple[int, str]]:
    """(index, filename) of every rotated copy of `base`, any compression suffix."""
    pattern = re.compile(re.escape(base) + r"\.(\d+)(\.gz|\.zst)?")
    found = []
    for entry in os.listdir(dest_dir):
        m = pattern.fullmatch(entry)
        if m:
            found.append((int(m.group(1)), entry))
    return found


def _shift(dest_dir: str, base: str, rotate: int) -> None:
    """Make room for a new .1: .k -> .k+1, dropping whatever would pass .rotate."""
    copies = _existing_copies(dest_dir, base)
    for index, name in sorted(copies, reverse=True):
        src = os.path.join(dest_dir, name)
        if index >= rotate:
            os.unlink(src)
            continue
        suffix = name[len(_copy_name(base, index)) :]
        os.rename(src, os.path.join(dest_dir, _copy_name(base, index + 1, suffix)))


def _pending_compression(dest_dir: str, base: str, options: CutOptions) -> list[str]:
    """Plain copies that should be compressed now (all but .1 under delay_compress)."""
    if options.compress == "none":
        return []
    first = 2 if options.delay_compress else 1
    return sorted(
        os.path.join(dest_dir, name)
        for index, name in _existing_copies(dest_dir, base)
        if index >= first and name == _copy_name(base, index)
    )


def _compress(path: str, how: str) -> str:
    """path -> path.gz/.zst (temp, fsync, rename), then drop path. Returns the new name."""
    target = path + COMPRESS_SUFFIX[how]
    st = os.stat(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".janitor-z-", suffix=".tmp")
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb", closefd=False) as out:
            if how == "gzip":
                with gzip.GzipFile(
                    filename=os.path.basename(path), mode="wb", fileobj=out, mtime=int(st.st_mtime)
                ) as z:
                    shutil.copyfileobj(src, z, _CHUNK)
            else:
                import zstandard  # lazy: only needed when someone asks for zstd

                zstandard.ZstdCompressor().copy_stream(src, out, size=st.st_size)
        _adopt_owner(fd, st)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, target)
    os.unlink(path)
    return target


def _compress_all(paths: list[str], options: CutOptions, log: str) -> tuple[list[str], list[str]]:
    done, warnings = [], []
    for p in paths:
        try:
            done.append(_compress(p, options.compress))
        except OSError as e:
            # The cut already happened; the plain copy is intact and retried next time.
            what = "no space left" if e.errno == errno.ENOSPC else str(e)
            warnings.append(f"could not compress {p} (rotated copy of {log}): {what}")
    return done, warnings


# --------------------------------------------------------------------------- entry point


def cut_log(
    path: str | os.PathLike[str], options: CutOptions, *, dir_fd: int | None = None
) -> CutResult:
    """Cut the log at `path` according to `options`; see the module docstring.

    `dir_fd` is accepted for the engine's future *at() use and currently ignored.
    """
    del dir_fd  # TODO: resolve relative to dir_fd once the engine passes one
    problems = validate_options(options)
    if problems:
        raise ValueError("; ".join(problems))
    log = os.path.abspath(os.fspath(path))
    dest_dir = os.path.abspath(options.olddir) if options.olddir else os.path.dirname(log)
    if not os.path.isdir(dest_dir):
        raise JanitorError(f"olddir {dest_dir} for {log} does not exist", code="E_OLDDIR")
    recover_cut(log, options)
    if options.mode == "rename":
        return _cut_rename(log, dest_dir, options)
    return _cut_in_place(log, dest_dir, options)


def _refuse_hard_links(log: str, st: os.stat_result) -> None:
    # A second name may be a user's hard link to a file they cannot write (/etc/shadow where
    # protected_hardlinks is off): cutting it would cut that file. logrotate refuses too.
    if st.st_nlink > 1:
        raise JanitorError(f"{log} has {st.st_nlink} hard links; refusing to cut it", code="E_UNSAFE")


def _cut_in_place(log: str, dest_dir: str, options: CutOptions) -> CutResult:
    fd = _open_log(log, os.O_RDWR)  # no O_APPEND: pwrite must honour offsets
    try:
        st = os.fstat(fd)
        _refuse_hard_links(log, st)
        if not options.allow_non_append_writers:
            pids = non_append_writers(st.st_dev, st.st_ino)
            if pids:
                raise NonAppendWriter(
                    f"{log} is open for writing without O_APPEND by pid "
                    f"{', '.join(map(str, pids))}: after a cut that writer keeps its old "
                    f"offset and leaves a NUL-filled sparse head (logrotate #363/#286). "
                    f"Open the log in append mode (shell '>>', not '>'), use mode rename, "
                    f"or set allow_non_append_writers"
                )
        size = st.st_size
        tail = _tail_start(fd, size, options)
        collapse = collapse_range_supported(log)
        if collapse:
            bs = _block_size(log)
            # The kernel refuses a collapse reaching EOF, hence size - 1.
            cut = (min(tail, size - 1) // bs) * bs if size else 0
        else:
            cut = tail
        method = "collapse-range" if collapse else "copy-truncate"
        if cut <= 0:
            return CutResult(log, method, size, 0, size, None, ())

        rotated: str | None = None
        tmp: str | None = None
        if options.rotate > 0:
            tmp = _write_copy(fd, st, cut, dest_dir, log)
            # The copy stays under its temporary name until the live file has lost those
            # bytes; a record of the pending cut, durable before the live file is touched,
            # lets recover_cut() tell after a crash whether the cut happened (keep the copy)
            # or not (drop it), so a kill at any instant loses and duplicates nothing.
            try:
                _write_cut_record(fd, st, cut, dest_dir, log, tmp)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

        try:
            if collapse:
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
            # Live file untouched (collapse is all-or-nothing): drop the copy, or those
            # bytes would show up twice. A copy-truncate that failed half way moved some
            # bytes already: keep the copy (duplicates, never a loss).
            if tmp is not None:
                if method == "collapse-range":
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    _drop_cut_record(dest_dir, log)
                else:
                    with contextlib.suppress(OSError):
                        _place_copy(dest_dir, os.path.basename(log), tmp, options.rotate)
                        _drop_cut_record(dest_dir, log)
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise DiskFull(f"no space left to collapse {log}; left untouched") from e
            raise
        if tmp is not None:
            rotated = _place_copy(dest_dir, os.path.basename(log), tmp, options.rotate)
            _drop_cut_record(dest_dir, log)
    finally:
        os.close(fd)

    compressed: list[str] = []
    warnings: list[str] = []
    if window > _SLOW_WINDOW:
        # ftruncate waited for the inode lock while the writer kept taking it.
        warnings.append(
            f"the truncate of {log} took {window * 1000:.1f} ms; lines written meanwhile are lost"
        )
    if options.rotate > 0:
        base = os.path.basename(log)
        compressed, more = _compress_all(
            _pending_compression(dest_dir, base, options), options, log
        )
        warnings += more
        first = os.path.join(dest_dir, _copy_name(base, 1, COMPRESS_SUFFIX[options.compress]))
        if first in compressed:
            rotated = first
    return CutResult(log, method, size, cut, after, rotated, tuple(compressed), tuple(warnings))


# --------------------------------------------------------------------------- crash recovery

_RECORD_SUFFIX = ".janitor-cut"
_PROBE = 4096  # bytes fingerprinted on each side of the cut


def _record_path(dest_dir: str, log: str) -> str:
    return os.path.join(dest_dir, f".{os.path.basename(log)}{_RECORD_SUFFIX}")


def _fingerprint(fd: int, offset: int) -> str:
    import hashlib

    return hashlib.sha256(os.pread(fd, _PROBE, offset)).hexdigest()


def _write_cut_record(fd: int, st: os.stat_result, cut: int, dest_dir: str, log: str, copy: str) -> None:
    """Durably note: `copy` holds log[0:cut) and the live file is about to lose it."""
    import json

    body = json.dumps({
        "copy": os.path.basename(copy), "cut": cut, "size": st.st_size, "dev": st.st_dev, "ino": st.st_ino,
        "head": _fingerprint(fd, 0), "next": _fingerprint(fd, cut),
    }).encode()
    record = _record_path(dest_dir, log)
    tmp = record + ".tmp"
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        _write_all(out, body)
        os.fsync(out)
    finally:
        os.close(out)
    os.rename(tmp, record)
    _fsync_dir(dest_dir)


def _drop_cut_record(dest_dir: str, log: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_record_path(dest_dir, log))


def _place_copy(dest_dir: str, base: str, tmp: str, rotate: int) -> str:
    """Shift the older copies and make the temp copy NAME.1, durably."""
    _shift(dest_dir, base, rotate)
    rotated = os.path.join(dest_dir, _copy_name(base, 1))
    os.rename(tmp, rotated)
    _fsync_dir(dest_dir)
    return rotated


def recover_cut(path: str | os.PathLike[str], options: CutOptions) -> str | None:
    """Finish or undo a cut that a crash (kill -9, power loss) interrupted; None if there was none.

    Returns "kept" when the live file had already lost the prefix (the temporary copy is
    made NAME.1), "dropped" when it had not (the copy is removed: the live file still has
    every byte). When the two cannot be told apart the copy is kept: duplicates, never loss.
    Also removes janitor's own scratch files of an interrupted cut or compression.
    """
    import json

    log = os.path.abspath(os.fspath(path))
    dest_dir = os.path.abspath(options.olddir) if options.olddir else os.path.dirname(log)
    base = os.path.basename(log)
    outcome: str | None = None
    record = _record_path(dest_dir, log)
    try:
        with open(record, "rb") as f:
            info = json.loads(f.read())
    except FileNotFoundError:
        info = None
    except (OSError, ValueError):
        info = {}  # torn record: written before the live file was touched, so nothing was cut
    copy = os.path.join(dest_dir, str(info.get("copy", ""))) if info else None
    if info is not None and copy and os.path.isfile(copy) and os.path.dirname(copy) == dest_dir:
        if _prefix_was_cut(log, info):
            _place_copy(dest_dir, base, copy, max(options.rotate, 1))
            outcome = "kept"
        else:
            os.unlink(copy)
            outcome = "dropped"
    if info is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record + ".tmp")
        _fsync_dir(dest_dir)
    _remove_scratch(dest_dir, base, os.path.dirname(log))
    return outcome


def _prefix_was_cut(log: str, info: dict) -> bool:
    try:
        fd = os.open(log, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return True  # the log is gone: the copy may be the only holder of those bytes
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (info.get("dev"), info.get("ino")):
            return True
        if st.st_size < int(info.get("size", 0)):
            return True  # append-only logs only grow; shorter means the cut happened
        head = _fingerprint(fd, 0)
        # still starts with the old head (and that is not also what follows the cut): not cut
        return not (head == info.get("head") and head != info.get("next"))
    finally:
        os.close(fd)


def _remove_scratch(dest_dir: str, base: str, log_dir: str) -> None:
    """Temp files of a cut or a compression that was killed: never a rotated copy or the log."""
    tmp_copy = re.compile(re.escape(f".{base}.") + r"[A-Za-z0-9_]{8}\.tmp")
    for directory in {dest_dir, log_dir}:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if tmp_copy.fullmatch(name) or name.startswith(".janitor-probe-") or (
                    name.startswith(".janitor-z-") and name.endswith(".tmp")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, name))
    # a compression killed between its rename and the unlink of the plain copy
    copies = {name: index for index, name in _existing_copies(dest_dir, base)}
    for name, index in copies.items():
        plain = _copy_name(base, index)
        if name != plain and plain in copies:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(dest_dir, plain))


def _open_log(log: str, flags: int) -> int:
    try:
        fd = os.open(log, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise JanitorError(f"{log} is a symlink; refusing to cut through it") from e
        raise JanitorError(f"cannot open {log}: {e.strerror}") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise JanitorError(f"{log} is not a regular file")
    return fd


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
    while True:
        t0 = time.perf_counter()
        size = os.fstat(fd).st_size
        if size == src:
            os.ftruncate(fd, dst)
            return dst, time.perf_counter() - t0
        if size < src:
            raise FileChanged(f"file shrank below {src} bytes while being cut (another rotator?)")
        while src < size:
            buf = os.pread(fd, min(size - src, _CHUNK), src)
            if not buf:
                break
            _write_all(fd, buf, dst)  # dst < src: never overwrites bytes not yet moved
            src += len(buf)
            dst += len(buf)


# --------------------------------------------------------------------------- rename mode


def _cut_rename(log: str, dest_dir: str, options: CutOptions) -> CutResult:
    try:
        st = os.lstat(log)
    except OSError as e:
        raise JanitorError(f"cannot stat {log}: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode):
        raise JanitorError(f"{log} is not a regular file (symlinks are not followed)")
    _refuse_hard_links(log, st)
    if os.stat(dest_dir).st_dev != st.st_dev:
        raise JanitorError(
            f"olddir {dest_dir} is on another filesystem than {log}; mode rename needs both "
            f"on one filesystem"
        )
    base = os.path.basename(log)
    rotated: str | None = None
    if options.rotate > 0:
        _shift(dest_dir, base, options.rotate)
        rotated = os.path.join(dest_dir, _copy_name(base, 1))
        os.rename(log, rotated)
    else:
        rotated_tmp = os.path.join(dest_dir, f".{base}.{os.getpid()}.old")
        os.rename(log, rotated_tmp)
    _create_like(log, st)
    _fsync_dir(os.path.dirname(log))
    if dest_dir != os.path.dirname(log):
        _fsync_dir(dest_dir)
    _reopen(log, options)

    old = rotated if rotated is not None else rotated_tmp
    warnings: list[str] = []
    # The service may still write to the old inode until it has reopened; compressing or
    # deleting it earlier would lose those lines.
    compress_now = options.compress != "none" and not options.delay_compress
    if options.rotate == 0 or compress_now:
        settled = _wait_writers_gone(st.st_dev, st.st_ino, _REOPEN_WAIT)
    else:
        settled = not _writers(st.st_dev, st.st_ino)
    if not settled and (options.rotate == 0 or compress_now):
        warnings.append(f"a process still writes to the old {log} after {_REOPEN_WAIT:.0f}s")
    moved = os.stat(old).st_size  # includes what the service wrote before it reopened
    if options.rotate == 0:
        if settled:
            os.unlink(old)
        else:
            warnings.append(f"kept {old} because it is still being written")
    compressed: list[str] = []
    if options.rotate > 0:
        pending = _pending_compression(dest_dir, base, options)
        if not settled and rotated in pending:
            pending.remove(rotated)
        pending = [p for p in pending if p == rotated or not _still_written(p)]
        compressed, more = _compress_all(pending, options, log)
        warnings += more
        first = rotated + COMPRESS_SUFFIX[options.compress] if rotated else None
        if first in compressed:
            rotated = first
    return CutResult(log, "rename", moved, moved, 0, rotated, tuple(compressed), tuple(warnings))


def _create_like(log: str, st: os.stat_result) -> None:
    """New empty log owned like the old one; 0600 until fchmod so it is never too open."""
    try:
        fd = os.open(
            log, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except FileExistsError:
        # The service itself recreated it (O_CREAT on reopen); fine if it is a plain file.
        if not stat.S_ISREG(os.lstat(log).st_mode):
            raise JanitorError(
                f"{log} was replaced by a non-regular file during rotation"
            ) from None
        return
    try:
        _adopt_owner(fd, st)
    finally:
        os.close(fd)


def _reopen(log: str, options: CutOptions) -> None:
    if options.reopen_signal is not None and options.reopen_pidfile:
        sig = _signal_of(options.reopen_signal)
        assert sig is not None  # validate_options checked it
        try:
            pid = int(Path(options.reopen_pidfile).read_text().split()[0])
        except (OSError, ValueError, IndexError) as e:
            raise JanitorError(f"cannot read a pid from {options.reopen_pidfile}: {e}") from e
        try:
            os.kill(pid, sig)
        except OSError as e:
            raise JanitorError(f"cannot send {sig.name} to pid {pid} for {log}: {e}") from e
    if options.postrotate:
        argv = list(options.postrotate)
        try:
            done = subprocess.run(argv, shell=False, timeout=_POSTROTATE_TIMEOUT, check=False)
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


def _still_written(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return bool(_writers(st.st_dev, st.st_ino))
