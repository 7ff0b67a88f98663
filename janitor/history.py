"""`janitor history`: what happened to which file, when, in which run, and where it is now."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from .catalog import Catalog, JournalEntry, existing_catalog
from .globs import path_matcher

if TYPE_CHECKING:
    from .config import Config


def query_history(
    catalog: Catalog,
    *,
    policies: list[str] | None = None,
    since: float | None = None,
    path_glob: str | None = None,
    run_id: str | None = None,
    limit: int | None = None,
) -> list[JournalEntry]:
    """Journal entries, newest first, matching every given filter."""
    where: list[str] = ["1"]
    params: list[Any] = []
    if policies:
        where.append(f"policy IN ({', '.join('?' for _ in policies)})")
        params.extend(policies)
    if since is not None:
        where.append("ts >= ?")
        params.append(time.time() - since)
    if run_id:
        where.append("run_id = ?")
        params.append(run_id)
    wanted = path_matcher([path_glob] if path_glob else [])
    out = []
    for entry in catalog.entries(" AND ".join(where), params, order="id DESC"):
        if path_glob and not wanted(entry.path):
            continue
        out.append(entry)
        if limit and len(out) >= limit:
            break
    return out


def where_now(entry: JournalEntry) -> str:
    """One phrase: where the file is now, as far as janitor knows."""
    if entry.state == "planned":
        return "in progress (or interrupted: settled by the next run)"
    if entry.state in ("skipped", "aborted", "failed"):
        return f"left in place ({entry.state}: {entry.error or 'no reason recorded'})"
    if entry.restored_at:
        return f"restored to its original path {time.strftime('%Y-%m-%d %H:%M', time.localtime(entry.restored_at))}"
    parts = []
    if entry.object_key:
        parts.append(f"archived to {entry.target}:{entry.object_key}"
                     + (f" (version {entry.version_id})" if entry.version_id else ""))
    if entry.trash_path:
        if entry.purged_at:
            parts.append("purged from the trash " + time.strftime("%Y-%m-%d", time.localtime(entry.purged_at)))
        else:
            parts.append(f"in the trash at {entry.trash_path}")
    if entry.action == "truncate":
        detail = _detail(entry)
        rotated = detail.get("rotated_to")
        parts.append(f"log cut ({detail.get('method', '?')})" + (f", old lines in {rotated}" if rotated else ""))
    if not parts:
        parts.append("deleted")
    return "; ".join(parts)


def _detail(entry: JournalEntry) -> dict[str, Any]:
    if not entry.detail:
        return {}
    try:
        value = json.loads(entry.detail)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def recent_runs(config: Config, limit: int) -> list[dict[str, Any]]:
    """The last `limit` runs as recorded in the catalog, newest first (the `runs` table's rows)."""
    with existing_catalog(config.settings.state_dir) as catalog:
        if catalog is None:
            return []
        cur = catalog.db.execute("SELECT * FROM runs ORDER BY started DESC LIMIT ?", (limit,))
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
