"""Archive target interface shared by the s3:// and file:// implementations.

This module must stay cheap to import: `janitor guard` imports janitor.targets, so nothing
here (or in the package __init__) may import boto3/botocore.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from janitor.errors import UploadFailed

# Called with the number of bytes moved since the previous call (boto3's convention).
Progress = Callable[[int], None]

# Metadata names, shared by S3 user metadata and the file target's sidecar.
META_SHA256 = "janitor-sha256"
META_MTIME = "janitor-mtime"
META_MODE = "janitor-mode"
# owner and mode of each directory between the policy path and the file, "uid:gid:mode/..."
# (octal mode), so that a restore can recreate missing directories as they were
META_DIRS = "janitor-dirs"
MAX_DIRS_META = 1500  # S3 user metadata holds 2 KiB in all


@dataclass(frozen=True)
class TargetSpec:
    """One `targets:` entry of a policy file, as built by the config loader."""

    name: str
    url: str  # "s3://bucket/optional/prefix" or "file:///abs/dir"
    endpoint_url: str | None = None
    region: str | None = None
    storage_class: str | None = None
    sse: str | None = None  # "AES256" | "aws:kms"
    addressing_style: str | None = None  # "path" | "virtual" | "auto"
    profile: str | None = None
    max_attempts: int = 5  # total requests incl. the first (botocore "standard" retry mode)
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    # Files below the threshold go up as one PutObject (verified by the server's SHA-256
    # in its reply); larger ones as a multipart upload in parts of the chunk size.
    multipart_threshold: int = 100 * 1024 * 1024
    multipart_chunksize: int = 16 * 1024 * 1024
    # "server": an upload counts as stored when the server proves which bytes it kept (the
    # ETag of a single PutObject is the MD5 janitor sent; each multipart part's ETag is that
    # part's MD5, and the object's ETag is the MD5 of those); where it proves nothing (SSE-KMS
    # or SSE-C ETags, a server that returns no MD5 ETag) the object is read back and hashed.
    # "readback": every upload is read back and hashed, whatever the server answered.
    verify: str = "server"
    # bytes per second for uploads, read-backs and downloads (all workers together); None: no limit
    bwlimit: int | None = None


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str | None  # hex digest as stored in metadata
    mtime: float | None  # original file mtime (from metadata)
    mode: int | None  # original st_mode & 0o7777 (from metadata)
    version_id: str | None = None
    # the server's ETag, unquoted (S3); None where there is none. Not part of equality: two
    # descriptions of the same stored bytes are equal whether or not one carries it.
    etag: str | None = field(default=None, compare=False)
    dirs: str | None = field(default=None, compare=False)  # META_DIRS, when recorded


@runtime_checkable
class ArchiveTarget(Protocol):
    spec: TargetSpec

    def key_for(self, policy: str, relpath: str) -> str: ...

    def stat(self, key: str) -> StoredObject | None: ...

    def upload(
        self,
        source: str | int,
        key: str,
        *,
        sha256: str,
        size: int,
        mtime: float,
        mode: int,
        progress: Progress | None = None,
        md5: str | None = None,
        dirs: str | None = None,
    ) -> StoredObject:
        """Store the first `size` bytes of `source` (an open descriptor, or a path opened
        O_NOFOLLOW) under `key` and prove the stored bytes are those (see `verify`)."""
        ...

    def download(
        self, key: str, dest: str | int, *, progress: Progress | None = None, version_id: str | None = None
    ) -> StoredObject:
        """Write the object into `dest` (an open descriptor, or a path created 0600) and
        verify its size and SHA-256 as it arrives; VerifyFailed when they differ."""
        ...

    def verified(self, obj: StoredObject, size: int, sha256: str, md5: str | None) -> bool:
        """Whether an object already stored holds these bytes (proof, not just our metadata)."""
        ...

    def check(self) -> None: ...

    def list_objects(self, prefix: str = "") -> Iterator[StoredObject]: ...

    def describe(self) -> str: ...

    def set_lifecycle(
        self,
        prefix_rule_id: str,
        prefix: str,
        expire_after_days: int,
        transition_after_days: int | None,
        storage_class: str | None,
    ) -> None: ...

    def get_lifecycle(self) -> list[dict[str, Any]]: ...


VERIFY_MODES = ("server", "readback")


class KeyRejected(UploadFailed):
    """The target cannot store this one key (a name too long, a reserved suffix): that
    file's own failure, never a sign that the target is down."""

    code = "E_KEY_REJECTED"
_RATE_RE = re.compile(r"^\s*(.+?)\s*(?:/\s*s|ps)?\s*$", re.IGNORECASE)


def parse_rate(value: object) -> int:
    """`20MiB/s` (rclone's --bwlimit spelling; `/s` optional) as bytes per second; ValueError otherwise."""
    from janitor.units import parse_size

    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a rate (examples: 20MiB/s, 500KiB/s)")
    if isinstance(value, int):
        rate = value
    else:
        m = _RATE_RE.match(str(value))
        if not m:
            raise ValueError(f"{value!r} is not a rate (examples: 20MiB/s, 500KiB/s)")
        try:
            rate = parse_size(m.group(1))
        except ValueError:
            raise ValueError(f"{value!r} is not a rate (examples: 20MiB/s, 500KiB/s)") from None
    if rate <= 0:
        raise ValueError(f"{value!r}: a bandwidth limit must be more than 0 bytes per second")
    return rate


class RateLimiter:
    """A token bucket shared by every transfer of one target (all workers together, as
    rclone's --bwlimit): `consume(n)` sleeps until n more bytes fit under the rate.

    The bucket holds at most a quarter of a second of bytes, so a burst after an idle
    spell stays small; the long-run rate never exceeds `rate`.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.burst = max(rate // 4, 1)
        self._lock = threading.Lock()
        self._tokens = 0.0  # start empty: the first bytes already wait their turn
        self._stamp = time.monotonic()

    def consume(self, n: int) -> None:
        if n <= 0:
            return
        with self._lock:  # one waiter at a time keeps the order fair and the sum exact
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            debt = -self._tokens
            if debt > 0:
                time.sleep(debt / self.rate)
                self._stamp = time.monotonic()
                self._tokens = 0.0


def limiter_for(spec: TargetSpec) -> RateLimiter | None:
    return RateLimiter(spec.bwlimit) if spec.bwlimit else None


def pread_exact(fd: int, offset: int, length: int) -> bytes:
    """Exactly `length` bytes from `offset` of an open file, never more (a file that grew
    is read only as far as planned); FileChanged when it is shorter than that now."""
    from janitor.errors import FileChanged

    chunks: list[bytes] = []
    want = length
    pos = offset
    while want > 0:
        block = os.pread(fd, min(want, 1 << 20), pos)
        if not block:
            raise FileChanged(f"shrank while it was read ({pos} of {offset + length} bytes)")
        chunks.append(block)
        want -= len(block)
        pos += len(block)
    return b"".join(chunks)


class BoundedFdReader:
    """A seekable, read-only view of the first `length` bytes (from `offset`) of an open file,
    for botocore request bodies: reads go through pread on that descriptor (never a path),
    stop at `length` whatever the file does meanwhile, pass through the rate limiter, and
    report progress. A short file raises FileChanged instead of sending fewer bytes."""

    def __init__(self, fd: int, offset: int, length: int, *, limiter: RateLimiter | None = None,
                 progress: Progress | None = None) -> None:
        self.fd = fd
        self.offset = offset
        self.length = length
        self.pos = 0
        self.limiter = limiter
        self.progress = progress

    def read(self, n: int = -1) -> bytes:
        left = self.length - self.pos
        if n is None or n < 0 or n > left:
            n = left
        if n <= 0:
            return b""
        n = min(n, 1 << 20)
        if self.limiter is not None:
            self.limiter.consume(n)
        data = pread_exact(self.fd, self.offset + self.pos, n)
        self.pos += n
        if self.progress is not None:
            self.progress(n)
        return data

    def seek(self, where: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.length}[whence]
        new = max(0, min(self.length, base + where))
        if self.progress is not None and new < self.pos:
            self.progress(new - self.pos)  # a retry sends those bytes again
        self.pos = new
        return self.pos

    def tell(self) -> int:
        return self.pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def read_all(self) -> bytes:
        chunks = []
        while block := self.read(1 << 20):
            chunks.append(block)
        return b"".join(chunks)

    def __len__(self) -> int:
        return self.length - self.pos

    def close(self) -> None:
        pass


def md5_of_fd(fd: int, size: int) -> str:
    """MD5 (hex) of the first `size` bytes of an open file, bounded by `size`."""
    h = hashlib.md5(usedforsecurity=False)
    for offset in range(0, size, 1 << 20):
        h.update(pread_exact(fd, offset, min(1 << 20, size - offset)))
    return h.hexdigest()


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def open_source(path: str) -> int:
    """Open a file named by the caller (library use and tests) the way janitor opens a
    candidate: no symlink, no blocking on a FIFO; it must be a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    import stat as _stat

    if not _stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    return fd


def open_dest(path: str) -> int:
    """Create (or truncate) a download destination named by the caller: 0600, no symlink."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def file_sha256(path: str, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks so large files do not load into memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_verified(obj: StoredObject | None, size: int, sha256: str) -> bool:
    """True when the stored copy already matches: same size and digest, so skip the upload."""
    return (
        obj is not None
        and obj.sha256 is not None
        and obj.size == size
        and obj.sha256.lower() == sha256.lower()
    )


def clean_key_parts(value: str, *, what: str) -> list[str]:
    """Split a relative key/path into components; refuse anything that could climb out.

    Empty and "." components are dropped so "a//./b" and "a/b" name the same object.
    """
    if value.startswith("/") or value.startswith("\\"):
        raise ValueError(f"{what} {value!r} must be relative, not absolute")
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"{what} {value!r} must not contain '..' components")
    if any("\0" in p for p in parts):
        raise ValueError(f"{what} {value!r} must not contain NUL bytes")
    return parts


def join_key(prefix: str, policy: str, relpath: str) -> str:
    """Key "<prefix>/<policy>/<relpath>", no leading slash; the prefix may be empty."""
    policy_parts = clean_key_parts(policy, what="policy name")
    if len(policy_parts) != 1:
        raise ValueError(f"policy name {policy!r} must be a single path component")
    rel_parts = clean_key_parts(relpath, what="path")
    if not rel_parts:
        raise ValueError("path must not be empty")
    prefix, placed = _fleet_prefix(prefix, policy)
    prefix_parts = [p for p in prefix.split("/") if p]
    return posixpath.join(*prefix_parts, *([] if placed else policy_parts), *rel_parts)


def join_prefix(prefix: str, policy: str) -> str:
    """Key prefix "<prefix>/<policy>/" under which one policy's archives live."""
    policy_parts = clean_key_parts(policy, what="policy name")
    if len(policy_parts) != 1:
        raise ValueError(f"policy name {policy!r} must be a single path component")
    prefix, placed = _fleet_prefix(prefix, policy)
    return posixpath.join(*[p for p in prefix.split("/") if p], *([] if placed else policy_parts)) + "/"


def _fleet_prefix(prefix: str, policy: str) -> tuple[str, bool]:
    """`{hostname}`/`{policy}` in a key prefix filled in (janitor/fleet.py), checked as key parts."""
    if "{" not in prefix:
        return prefix, False
    from janitor.fleet import expand_prefix

    expanded, placed = expand_prefix(prefix, policy)
    clean_key_parts(expanded, what="key prefix")
    return expanded, placed


def parse_dirs_meta(value: object) -> list[tuple[int, int, int]] | None:
    """META_DIRS back into (uid, gid, mode) per directory; None when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    out = []
    try:
        for item in value.split("/"):
            uid, gid, mode = item.split(":")
            out.append((int(uid), int(gid), int(mode, 8) & 0o7777))
    except ValueError:
        return None
    return out


def validate_lifecycle_args(
    prefix_rule_id: str,
    expire_after_days: int,
    transition_after_days: int | None,
    storage_class: str | None,
) -> None:
    """Catch nonsense before the endpoint answers with a vague MalformedXML."""
    if not prefix_rule_id or len(prefix_rule_id) > 255:
        raise ValueError("lifecycle rule id must be 1-255 characters")
    if expire_after_days < 1:
        raise ValueError("expire_after_days must be at least 1")
    if (transition_after_days is None) != (storage_class is None):
        raise ValueError("transition_after_days and storage_class must be given together")
    if transition_after_days is not None:
        if transition_after_days < 0:
            raise ValueError("transition_after_days must not be negative")
        if transition_after_days >= expire_after_days:
            raise ValueError("transition_after_days must be less than expire_after_days")
