"""file:// archive target: a directory, typically a mounted NAS share.

Each object is a plain file plus a sidecar "KEY.janitor.json" holding {sha256, size, mtime,
mode}. Crash-safety invariant: a sidecar only ever describes the data file currently in place.
Upload therefore removes an old sidecar first and writes the new one only after the data has
been renamed into place, so a crash at any point leaves either no sidecar (not verified: the
next run reads the data back, `holds_bytes`, and completes it in place when it holds the
same bytes) or a sidecar that matches the data.

Every object, sidecar and temporary file is reached from the base directory through
directory descriptors opened one component at a time with O_NOFOLLOW; temporary files are
created O_EXCL, 0600, under unguessable names and checked with fstat before they are used.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from janitor.errors import DiskFull, FileChanged, TargetError, UploadFailed, VerifyFailed
from janitor.targets.base import (
    KeyRejected,
    Progress,
    RateLimiter,
    StoredObject,
    TargetSpec,
    clean_key_parts,
    join_key,
    join_prefix,
    limiter_for,
    open_dest,
    open_source,
    write_all,
)

SIDECAR_SUFFIX = ".janitor.json"
_TMP_SUFFIX = ".janitor-tmp"
_CHUNK = 1 << 20


def _fsync_fd(dir_fd: int) -> None:
    with contextlib.suppress(OSError):
        os.fsync(dir_fd)


def _new_temp(dir_fd: int, prefix: str) -> tuple[int, str]:
    """A new 0600 file in dir_fd: O_CREAT|O_EXCL|O_NOFOLLOW under an unguessable name,
    confirmed with fstat (a regular file of ours, one link) before it is trusted."""
    name = f"{prefix}{secrets.token_hex(8)}{_TMP_SUFFIX}"
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
        os.close(fd)
        raise UploadFailed(f"temporary file {name} is not janitor's own")
    return fd, name


def _unlink_quiet(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _copy_hashing(src_fd: int, size: int, dst_fd: int, progress: Progress | None,
                  limiter: RateLimiter | None = None, *, exact: bool = True) -> tuple[int, str]:
    """Copy the first `size` bytes of src_fd into dst_fd (both descriptors, pread: never
    more than `size`, whatever the source does meanwhile); (bytes, hex sha256) written.
    `exact`: a shorter source raises FileChanged; else the copy stops at its end."""
    h = hashlib.sha256()
    total = 0
    while total < size:
        want = min(_CHUNK, size - total)
        if limiter is not None:
            limiter.consume(want)
        block = os.pread(src_fd, want, total)
        if not block:
            if exact:
                raise FileChanged(f"shrank while it was copied ({total} of {size} bytes)")
            break
        write_all(dst_fd, block)
        h.update(block)
        total += len(block)
        if progress is not None:
            progress(len(block))
    if not exact and os.pread(src_fd, 1, total):
        total += 1  # longer than recorded: the caller's size check fails
    os.fsync(dst_fd)
    return total, h.hexdigest()


class FileTarget:
    """Archive into a local or mounted directory given as file:///abs/dir."""

    def __init__(self, spec: TargetSpec) -> None:
        parts = urlsplit(spec.url)
        if parts.scheme.lower() != "file":
            raise ValueError(f"target {spec.name}: {spec.url!r} is not a file:// URL")
        if parts.netloc not in ("", "localhost"):
            raise ValueError(
                f"target {spec.name}: file URL {spec.url!r} names host {parts.netloc!r}; "
                "use file:///absolute/dir (mount remote shares locally first)"
            )
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ValueError(f"target {spec.name}: file URL {spec.url!r} needs an absolute path")
        if "{hostname}" in path:  # a fleet sharing one mount: a directory per host (janitor/fleet.py)
            from janitor.fleet import host_name

            path = path.replace("{hostname}", host_name())
        self.spec = spec
        self.base = os.path.normpath(path)
        self._limiter = limiter_for(spec)

    # -- naming ---------------------------------------------------------------------------

    def key_for(self, policy: str, relpath: str) -> str:
        return join_key("", policy, relpath)

    def policy_prefix(self, policy: str) -> str:
        return join_prefix("", policy)

    def describe(self) -> str:
        return f"file://{self.base}"

    def _fail(self, message: str) -> str:
        return f"target {self.spec.name}: {message}"

    def _path(self, key: str) -> str:
        parts = clean_key_parts(key, what="key")
        if not parts:
            raise ValueError("key must not be empty")
        if parts[-1].endswith(SIDECAR_SUFFIX) or parts[-1].endswith(_TMP_SUFFIX):
            raise ValueError(f"key {key!r} collides with janitor's own file names")
        return os.path.join(self.base, *parts)

    def _parent(self, key: str, *, create: bool = False) -> tuple[int, str]:
        """(directory fd, name) of `key`, reached from the base directory one component at a
        time with O_NOFOLLOW (created 0755 with `create`): no symlink inside the target can
        send a read or a write elsewhere. FileNotFoundError when a directory is missing."""
        from janitor.safepath import open_dirs_below

        parts = clean_key_parts(key, what="key")
        if not parts:
            raise ValueError("key must not be empty")
        self._path(key)  # the reserved-suffix check
        base_fd = os.open(self.base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                return open_dirs_below(base_fd, parts[:-1], create=create), parts[-1]
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ValueError(
                        f"{os.path.join(self.base, *parts)!r} resolves outside the target directory "
                        f"{self.base!r} (a symlink or a file where a directory belongs)"
                    ) from None
                raise
        finally:
            os.close(base_fd)

    # -- reading --------------------------------------------------------------------------

    @staticmethod
    def _open_regular(dir_fd: int, name: str) -> int:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY, dir_fd=dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, f"{name} is not a regular file")
        return fd

    def _read_sidecar(self, dir_fd: int, name: str) -> dict[str, Any] | None:
        try:
            fd = self._open_regular(dir_fd, name + SIDECAR_SUFFIX)
        except FileNotFoundError:
            return None
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb") as f:
                data = json.loads(f.read(1 << 16).decode("utf-8"))
        except (OSError, ValueError):
            return None  # unreadable sidecar = unverified copy; the next run re-uploads
        return data if isinstance(data, dict) else None

    def stat(self, key: str) -> StoredObject | None:
        try:
            dir_fd, name = self._parent(key)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise TargetError(self._fail(f"cannot reach '{key}': {e.strerror}")) from None
        try:
            return self._stat_at(key, dir_fd, name)
        finally:
            os.close(dir_fd)

    def _stat_at(self, key: str, dir_fd: int, name: str) -> StoredObject | None:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise TargetError(self._fail(f"cannot stat '{key}': {e.strerror}")) from None
        if not stat.S_ISREG(st.st_mode):
            return StoredObject(key=key, size=st.st_size, sha256=None, mtime=None, mode=None)  # never verified
        meta = self._read_sidecar(dir_fd, name) or {}
        sha = meta.get("sha256")
        mtime = meta.get("mtime")
        mode = meta.get("mode")
        return StoredObject(
            key=key,
            size=st.st_size,
            sha256=sha if isinstance(sha, str) else None,
            mtime=float(mtime) if isinstance(mtime, int | float) else None,
            mode=mode if isinstance(mode, int) else None,
            dirs=meta.get("dirs") if isinstance(meta.get("dirs"), str) else None,
        )

    def download(
        self, key: str, dest: str | int, *, progress: Progress | None = None, version_id: str | None = None
    ) -> StoredObject:
        obj = self.stat(key)
        if obj is None:
            raise TargetError(self._fail(f"object '{key}' does not exist"))
        if obj.sha256 is None:
            raise VerifyFailed(
                self._fail(f"'{key}' has no readable metadata sidecar; cannot verify")
            )
        shown = dest if isinstance(dest, str) else "the restore copy"
        out_fd = -1
        try:
            out_fd = dest if isinstance(dest, int) else open_dest(dest)
            dir_fd, name = self._parent(key)
            try:
                src = self._open_regular(dir_fd, name)
            finally:
                os.close(dir_fd)
            try:
                size, digest = _copy_hashing(src, obj.size, out_fd, progress, self._limiter, exact=False)
            finally:
                os.close(src)
        except OSError as e:
            if isinstance(dest, str):
                _unlink_quiet(dest)
            if e.errno == errno.ENOSPC:
                raise DiskFull(f"no space left writing {shown}") from None
            raise TargetError(
                self._fail(f"cannot copy '{key}' to {shown}: {e.strerror}")
            ) from None
        finally:
            if isinstance(dest, str) and out_fd >= 0:
                os.close(out_fd)
        if size != obj.size or digest != obj.sha256.lower():
            if isinstance(dest, str):
                _unlink_quiet(dest)  # never leave corrupt bytes where a restore might pick them up
            raise VerifyFailed(
                self._fail(
                    f"'{key}' is corrupt: read {size} bytes sha256 {digest[:16]}, "
                    f"stored {obj.size} bytes sha256 {obj.sha256[:16]}"
                )
            )
        return obj

    def verified(self, obj: StoredObject, size: int, sha256: str, md5: str | None, fd: int | None = None) -> bool:
        """A copy whose sidecar matches (written only after the copy was read back); with
        `verify: readback`, the copy is hashed again too."""
        if not (obj.sha256 and obj.size == size and obj.sha256.lower() == sha256.lower()):
            return False
        if self.spec.verify != "readback":
            return True
        try:
            dir_fd, name = self._parent(obj.key)
            try:
                self._verify_stored(obj.key, dir_fd, name, size=size, sha256=sha256.lower())
            finally:
                os.close(dir_fd)
        except (VerifyFailed, ValueError, OSError):
            return False
        return True

    def holds_bytes(self, obj: StoredObject, size: int, sha256: str) -> bool:
        """Whether the data file of `obj` holds exactly these bytes, sidecar or not: a run
        killed between renaming the data into place and writing its sidecar leaves such a
        copy, and the next run must recognise it rather than store the file a second time."""
        if obj.size != size:
            return False
        try:
            dir_fd, name = self._parent(obj.key)
        except (ValueError, OSError):
            return False
        try:
            h = hashlib.sha256()
            got = 0
            with os.fdopen(self._open_regular(dir_fd, name), "rb") as f:
                while got <= size and (block := f.read(_CHUNK)):
                    h.update(block)
                    got += len(block)
            return got == size and h.hexdigest() == sha256.lower()
        except OSError:
            return False
        finally:
            os.close(dir_fd)

    def list_objects(self, prefix: str = "") -> Iterator[StoredObject]:
        if not os.path.isdir(self.base):
            return
        for dirpath, dirnames, filenames in os.walk(self.base):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(SIDECAR_SUFFIX) or name.endswith(_TMP_SUFFIX):
                    continue
                key = os.path.relpath(os.path.join(dirpath, name), self.base).replace(os.sep, "/")
                if key.startswith(prefix):
                    obj = self.stat(key)
                    if obj is not None:
                        yield obj

    # -- writing --------------------------------------------------------------------------

    def check(self) -> None:
        if not os.path.exists(self.base):
            raise TargetError(
                self._fail(f"directory {self.base} does not exist (is the share mounted?)")
            )
        if not os.path.isdir(self.base):
            raise TargetError(self._fail(f"{self.base} is not a directory"))
        # A real write probe: os.access lies on read-only mounts and with root squash. An
        # unnamed O_TMPFILE leaves nothing behind even if we are killed right here; where
        # the filesystem has no O_TMPFILE (NFS, CIFS) a named probe is made and removed.
        try:
            try:
                os.close(os.open(self.base, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600))
                return
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                    raise
            fd, probe = tempfile.mkstemp(
                dir=self.base, prefix=".janitor-check-", suffix=_TMP_SUFFIX
            )
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise TargetError(self._fail(f"cannot write to {self.base}: {e.strerror}")) from None

    def discard_partial(self, key: str) -> int:
        """Remove temp files an upload of `key` killed half way left behind; how many.

        Called when a killed run is reconciled (the run lock says no upload is running).
        They are never taken for objects, but they take space and look like data.
        """
        try:
            dir_fd, base = self._parent(key)
        except FileNotFoundError:
            return 0
        removed = 0
        try:
            prefix = "." + base + "."
            for name in os.listdir(dir_fd):
                if name.startswith(prefix) and name.endswith(_TMP_SUFFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=dir_fd)
                    removed += 1
        finally:
            os.close(dir_fd)
        return removed

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
        fd = source if isinstance(source, int) else open_source(source)
        try:
            return self._upload_fd(fd, key, sha256=sha256, size=size, mtime=mtime, mode=mode, progress=progress,
                                   dirs=dirs)
        finally:
            if not isinstance(source, int):
                os.close(fd)

    def _upload_fd(self, src_fd: int, key: str, *, sha256: str, size: int, mtime: float, mode: int,
                   progress: Progress | None, dirs: str | None = None) -> StoredObject:
        if not os.path.isdir(self.base):
            raise TargetError(
                self._fail(f"directory {self.base} does not exist (is the share mounted?)")
            )
        dir_fd = -1
        tmp: str | None = None
        try:
            dir_fd, name = self._parent(key, create=True)
            # Drop any old sidecar before the data changes (see module docstring).
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name + SIDECAR_SUFFIX, dir_fd=dir_fd)
                os.fsync(dir_fd)
            fd, tmp = _new_temp(dir_fd, "." + name + ".")
            try:
                copied, digest = _copy_hashing(src_fd, size, fd, progress, self._limiter)
                now = os.fstat(src_fd)
                if stat.S_ISREG(now.st_mode) and now.st_size != size:
                    copied = now.st_size  # grew: only the planned bytes were read; not the file now
            finally:
                os.close(fd)
            if copied != size or digest != sha256.lower():
                raise FileChanged(
                    f"changed while archiving (now {copied} bytes sha256 "
                    f"{digest[:16]}, planned {size} bytes sha256 {sha256[:16]})"
                )
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            tmp = None
            _fsync_fd(dir_fd)
            self._write_sidecar(dir_fd, name, sha256=sha256.lower(), size=size, mtime=mtime, mode=mode, dirs=dirs)
            return self._verify_stored(key, dir_fd, name, size=size, sha256=sha256.lower())
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise DiskFull(self._fail(f"no space left on {self.base}")) from None
            if e.errno == errno.ENAMETOOLONG:
                raise KeyRejected(self._fail(f"cannot store '{key}': a name is too long there")) from None
            raise UploadFailed(self._fail(f"cannot write '{key}': {e.strerror}")) from None
        finally:
            if dir_fd >= 0:
                if tmp is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp, dir_fd=dir_fd)
                os.close(dir_fd)

    def _write_sidecar(self, dir_fd: int, name: str, *, sha256: str, size: int, mtime: float, mode: int,
                       dirs: str | None = None) -> None:
        meta: dict[str, object] = {"sha256": sha256, "size": size, "mtime": mtime, "mode": mode & 0o7777}
        if dirs:
            meta["dirs"] = dirs
        body = json.dumps(meta, sort_keys=True).encode()
        fd, tmp = _new_temp(dir_fd, "." + name + ".meta.")
        try:
            write_all(fd, body)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, name + SIDECAR_SUFFIX, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        _fsync_fd(dir_fd)

    def _verify_stored(self, key: str, dir_fd: int, name: str, *, size: int, sha256: str) -> StoredObject:
        """Re-read the stored copy: catches short writes and lying storage before deletion."""
        h = hashlib.sha256()
        got = 0
        try:
            with os.fdopen(self._open_regular(dir_fd, name), "rb") as f:
                while block := f.read(_CHUNK):
                    h.update(block)
                    got += len(block)
        except OSError as e:
            raise VerifyFailed(self._fail(f"cannot re-read '{key}': {e.strerror}")) from None
        obj = self._stat_at(key, dir_fd, name)
        if obj is None or got != size or h.hexdigest() != sha256 or obj.sha256 != sha256:
            raise VerifyFailed(
                self._fail(f"'{key}' did not verify after writing ({got} bytes, expected {size})")
            )
        return obj

    # -- lifecycle ------------------------------------------------------------------------

    def set_lifecycle(
        self,
        prefix_rule_id: str,
        prefix: str,
        expire_after_days: int,
        transition_after_days: int | None,
        storage_class: str | None,
    ) -> None:
        raise TargetError(self._fail("lifecycle rules are only supported on s3:// targets"))

    def get_lifecycle(self) -> list[dict[str, Any]]:
        raise TargetError(self._fail("lifecycle rules are only supported on s3:// targets"))
