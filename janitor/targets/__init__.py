"""Archive targets: where janitor copies files (S3/MinIO or a mounted directory) before deleting.

Importing this package must not import boto3/botocore (`janitor guard` must start fast);
the S3 target imports them the first time it talks to the endpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from janitor.targets.base import (
    ArchiveTarget,
    Progress,
    StoredObject,
    TargetSpec,
    file_sha256,
    is_verified,
)


def _make_s3(spec: TargetSpec) -> ArchiveTarget:
    from janitor.targets.s3 import S3Target

    return S3Target(spec)


def _make_file(spec: TargetSpec) -> ArchiveTarget:
    from janitor.targets.filesystem import FileTarget

    return FileTarget(spec)


# URL scheme -> factory; the modules are imported on demand to keep startup cheap.
_FACTORIES: dict[str, Callable[[TargetSpec], ArchiveTarget]] = {
    "s3": _make_s3,
    "file": _make_file,
}

VALID_SCHEMES = tuple(sorted(_FACTORIES))


def make_target(spec: TargetSpec) -> ArchiveTarget:
    """Build the target for spec.url's scheme; ValueError for schemes we do not know."""
    scheme = urlsplit(spec.url).scheme.lower()
    factory = _FACTORIES.get(scheme)
    if factory is None:
        shown = f"'{scheme}'" if scheme else "none"
        raise ValueError(
            f"target {spec.name}: unsupported URL scheme {shown} in {spec.url!r}; "
            f"valid schemes: {', '.join(VALID_SCHEMES)}"
        )
    return factory(spec)


__all__ = [
    "VALID_SCHEMES",
    "ArchiveTarget",
    "Progress",
    "StoredObject",
    "TargetSpec",
    "file_sha256",
    "is_verified",
    "make_target",
]
