"""Archive targets: where janitor copies files (S3/MinIO or a mounted directory) before deleting.

Importing this package must not import boto3/botocore (`janitor guard` must start fast);
the S3 target imports them the first time it talks to the endpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
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

if TYPE_CHECKING:
    from janitor.config import Config, Policy, TargetConfig


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


def spec_from_config(name: str, cfg: TargetConfig) -> TargetSpec:
    """The TargetSpec for one `targets:` entry of the policy files."""
    return TargetSpec(
        name=name,
        url=cfg.url,
        endpoint_url=cfg.endpoint_url,
        region=cfg.region,
        storage_class=cfg.storage_class,
        sse=cfg.sse,
        addressing_style=cfg.addressing_style,
        profile=cfg.profile,
        max_attempts=cfg.max_attempts,
        connect_timeout=cfg.connect_timeout,
        read_timeout=cfg.read_timeout,
        multipart_threshold=cfg.multipart_threshold,
        multipart_chunksize=cfg.multipart_chunksize,
        verify=getattr(cfg, "verify", None) or "server",
        bwlimit=getattr(cfg, "bwlimit", None),
    )


def target_for(config: Config, name: str, policy: Policy | None = None) -> ArchiveTarget:
    """The target the policy files define under `name`; TargetError when there is none.
    `policy`: its `verify` and `bwlimit`, when set, override the target's."""
    from dataclasses import replace

    from janitor.errors import TargetError

    cfg = config.targets.get(name)
    if cfg is None:
        known = ", ".join(sorted(config.targets)) or "none"
        raise TargetError(f"no target named {name!r} (defined: {known})")
    spec = spec_from_config(name, cfg)
    if policy is not None:
        if getattr(policy, "verify", None):
            spec = replace(spec, verify=str(policy.verify))
        if getattr(policy, "bwlimit", None):
            spec = replace(spec, bwlimit=policy.bwlimit)
    try:
        return make_target(spec)
    except ValueError as exc:
        raise TargetError(str(exc)) from None


__all__ = [
    "VALID_SCHEMES",
    "ArchiveTarget",
    "Progress",
    "StoredObject",
    "TargetSpec",
    "file_sha256",
    "is_verified",
    "make_target",
    "spec_from_config",
    "target_for",
]
