"""Archive target interface shared by the s3:// and file:// implementations.

This module must stay cheap to import: `janitor guard` imports janitor.targets, so nothing
here (or in the package __init__) may import boto3/botocore.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# Called with the number of bytes moved since the previous call (boto3's convention).
Progress = Callable[[int], None]

# Metadata names, shared by S3 user metadata and the file target's sidecar.
META_SHA256 = "janitor-sha256"
META_MTIME = "janitor-mtime"
META_MODE = "janitor-mode"


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


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str | None  # hex digest as stored in metadata
    mtime: float | None  # original file mtime (from metadata)
    mode: int | None  # original st_mode & 0o7777 (from metadata)
    version_id: str | None = None


@runtime_checkable
class ArchiveTarget(Protocol):
    spec: TargetSpec

    def key_for(self, policy: str, relpath: str) -> str: ...

    def stat(self, key: str) -> StoredObject | None: ...

    def upload(
        self,
        local_path: str,
        key: str,
        *,
        sha256: str,
        size: int,
        mtime: float,
        mode: int,
        progress: Progress | None = None,
    ) -> StoredObject: ...

    def download(
        self, key: str, dest_path: str, *, progress: Progress | None = None
    ) -> StoredObject: ...

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

    def get_lifecycle(self) -> list[dict]: ...


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
