"""What tells one host of a fleet from another: its name on every metric, event and archive key.

`host_name()` is the node name (`uname -n`), overridable with $JANITOR_HOSTNAME for hosts
whose node name is not unique (containers). Archive target URLs may say `{hostname}` and
`{policy}` in their key prefix (`s3://archive/{hostname}/{policy}`): `expand_prefix` fills
them in, and refuses a host name that is not one clean key component.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

_HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


def host_name() -> str:
    """This host's name as metrics, events and archive keys carry it."""
    name = os.environ.get("JANITOR_HOSTNAME") or os.uname().nodename
    if not _HOST_RE.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"host name {name!r} cannot name this host in keys and labels; set $JANITOR_HOSTNAME")
    return name


def label_host() -> str:
    """The host for labels and log fields: `host_name()`, or the raw node name when
    $JANITOR_HOSTNAME is unusable (a label must never stop a run; archive keys do refuse it)."""
    try:
        return host_name()
    except ValueError:
        return os.uname().nodename


def expand_prefix(prefix: str, policy: str) -> tuple[str, bool]:
    """(prefix with `{hostname}` and `{policy}` filled in, whether `{policy}` was in it).

    When the prefix places `{policy}` itself, keys are `<prefix>/<relpath>`; otherwise
    janitor appends the policy as always: `<prefix>/<policy>/<relpath>`.
    """
    if "{" not in prefix:
        return prefix, False
    has_policy = "{policy}" in prefix
    out = prefix.replace("{hostname}", host_name() if "{hostname}" in prefix else "").replace("{policy}", policy)
    if "{" in out or "}" in out:
        raise ValueError(f"key prefix {prefix!r}: only {{hostname}} and {{policy}} can be filled in")
    return out, has_policy


class HostLabelled:
    """A collector that yields another's metrics with `host="<name>"` added to every sample."""

    def __init__(self, inner: Collector, host: str | None = None) -> None:
        self.inner = inner
        self.host = host or label_host()

    def collect(self) -> Iterator[Metric]:
        for family in self.inner.collect():
            family.samples = [s._replace(labels={**s.labels, "host": self.host}) for s in family.samples]
            yield family
