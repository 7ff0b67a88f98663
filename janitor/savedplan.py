"""Saved plans: `janitor plan --out FILE`, then `janitor run --plan FILE` (terraform's plan -out / apply).

The file holds the plan exactly as `run` executes it (every action with the file's identity
as the plan saw it: device, inode, size, times), the SHA-256 of the loaded configuration and
the time it was made. `run --plan` executes that plan and nothing else: each file is
re-checked just before acting as in every run (same device, inode, size and mtime; not open
for writing), a file that changed is skipped, and no file outside the plan is selected.

A plan is refused, with one line, when:

- the configuration changed since it was made (the digest of the loaded policies, targets and
  settings differs: a plan reviewed against other rules is not what they would do now);
- it is older than `--max-age` (default 24h), or made in the future;
- the file is not a regular file owned by root (or janitor's own uid) with one link, or is
  writable by its group or others: janitor runs as root, and a plan is a list of files to
  delete, so the file must be one nobody else could have written.

A file put on hold since the plan was made (`janitor hold`, `janitor restore`) is not acted on:
it becomes a `held` skip of the loaded plan.

Format: JSON lines. A header, then per policy one line with the policy's plan and then one
line per action and per skip; written and read as a stream.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import time
from collections.abc import Iterator
from typing import IO, Any

from .disk import DiskUsage
from .errors import EXIT_USAGE, JanitorError
from .facttable import ActionList
from .holds import holds_in_force, skip_reason
from .plan import Plan, PolicyPlan, Skip
from .scan import FileFact
from .units import format_duration

FORMAT = "janitor-plan/1"
DEFAULT_MAX_AGE = 24 * 3600.0


class PlanRefused(JanitorError):
    """A saved plan that must not be executed (changed configuration, too old, unsafe file)."""

    exit_code = EXIT_USAGE
    code = "E_PLAN_REFUSED"


def config_digest(config: Any) -> str:
    """SHA-256 of the loaded configuration: settings, targets and policies as validated.

    Comments, formatting and the order of files do not count; any value that changes what
    a run does does.
    """
    data = {
        "settings": config.settings.model_dump(mode="json"),
        "targets": {name: t.model_dump(mode="json") for name, t in sorted(config.targets.items())},
        "policies": sorted((p.model_dump(mode="json") for p in config.policies), key=lambda p: str(p["name"])),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


# -- writing -------------------------------------------------------------------------------


def write_plan(plan: Plan, config: Any, path: str) -> None:
    """Write the plan to `path` (0600), atomically: a temporary name, then a rename."""
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with open(fd, "w", encoding="utf-8", errors="surrogateescape", closefd=False) as out:
            for line in plan_lines(plan, config_digest(config)):
                out.write(line)
                out.write("\n")
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def plan_lines(plan: Plan, digest: str) -> Iterator[str]:
    dump = json.dumps
    yield dump({"format": FORMAT, "created": plan.created, "config_sha256": digest,
                "procfs_complete": plan.procfs_complete, "policies": len(plan.policies)})
    for pp in plan.policies:
        yield dump({"policy": pp.name, "action": pp.action, "root": pp.root, "root_dev": pp.root_dev,
                    "root_ino": pp.root_ino, "matched": pp.matched, "matched_bytes": pp.matched_bytes,
                    "notes": pp.notes, "blocked": pp.blocked, "inactive": pp.inactive, "error": pp.error,
                    "disk": None if pp.disk is None else [pp.disk.path, pp.disk.total, pp.disk.used, pp.disk.free],
                    "stop_at_pct": pp.stop_at_pct, "purges": pp.purges, "disposal": pp.disposal,
                    "actions": len(pp.actions), "skips": len(pp.skips)})
        for a in pp.actions:
            f = a.fact
            yield dump([f.relpath, f.dev, f.ino, f.size, f.mtime, f.atime, f.ctime, f.mode, f.uid, f.gid,
                        a.reason, a.detail, f.blocks, f.nlink])
        for s in pp.skips:
            yield dump([s.path, s.bytes, s.code, s.reason])


# -- reading -------------------------------------------------------------------------------


def open_saved_plan(path: str) -> IO[str]:
    """Open the file for reading after checking it is one only root (or we) could have written."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise PlanRefused(f"plan {path}: cannot open it ({exc.strerror}; a symlink is refused)") from None
    try:
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "not a regular file"
        elif st.st_uid not in (0, os.geteuid()):
            problem = f"owned by uid {st.st_uid}, not by root or janitor's uid {os.geteuid()}"
        elif st.st_mode & 0o022:
            problem = f"writable by its group or others (mode {stat.S_IMODE(st.st_mode):04o})"
        elif st.st_nlink != 1:
            problem = f"has {st.st_nlink} links"
        if problem:
            raise PlanRefused(f"plan {path} is {problem}: refusing it" if problem.startswith("not")
                              else f"plan {path} {problem}: refusing it")
        os.set_blocking(fd, True)
        return open(fd, encoding="utf-8", errors="surrogateescape")
    except BaseException:
        os.close(fd)
        raise


def load_plan(path: str, config: Any, *, max_age: float = DEFAULT_MAX_AGE, now: float | None = None) -> Plan:
    """The saved plan at `path`, or PlanRefused naming the one reason it cannot be executed."""
    now = time.time() if now is None else now
    with open_saved_plan(path) as src:
        try:
            return _parse(src, path, config, max_age, now)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise PlanRefused(f"plan {path} is not a janitor plan ({type(exc).__name__}: {exc})") from None


def _parse(src: IO[str], path: str, config: Any, max_age: float, now: float) -> Plan:
    header = json.loads(src.readline())
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise PlanRefused(f"plan {path} is not a {FORMAT} file")
    if header["config_sha256"] != config_digest(config):
        raise PlanRefused(f"plan {path} was made with another configuration (policies, targets or settings "
                          "changed since): make a new plan")
    created = float(header["created"])
    age = now - created
    if age > max_age:
        raise PlanRefused(f"plan {path} is {format_duration(age)} old, older than --max-age "
                          f"{format_duration(max_age)}: make a new plan")
    if age < -300:
        raise PlanRefused(f"plan {path} was made in the future ({format_duration(-age)} ahead)")
    names = {p.name: p for p in config.policies}
    holds = holds_in_force(config.settings.state_dir, now)  # a hold made since the plan still counts
    policies = []
    for _ in range(int(header["policies"])):
        head = json.loads(src.readline())
        policy = names.get(head["policy"])
        if policy is None or policy.path != head["root"] or policy.action != head["action"]:
            raise PlanRefused(f"plan {path}: policy {head['policy']!r} is not in the configuration as planned")
        disk = head["disk"]
        pp = PolicyPlan(
            head["policy"], head["action"], policy.path, root_dev=int(head["root_dev"]),
            root_ino=int(head["root_ino"]), matched=int(head["matched"]), matched_bytes=int(head["matched_bytes"]),
            notes=[str(n) for n in head["notes"]], blocked=head["blocked"], inactive=head["inactive"],
            error=head["error"], disk=None if disk is None else DiskUsage(str(disk[0]), *map(int, disk[1:])),
            stop_at_pct=head["stop_at_pct"], purges=int(head["purges"]), disposal=head.get("disposal"),
        )
        root = policy.path
        actions = ActionList(pp.name, pp.action, root)
        pp.actions = actions
        held = holds.for_root(root)
        late_holds: list[Skip] = []
        for _ in range(int(head["actions"])):
            row = json.loads(src.readline())
            rel, dev, ino, size, mtime, atime, ctime, mode, uid, gid, reason, detail = row[:12]
            # blocks and nlink (what quota counts) came later: a row without them reads as one plain file
            blocks, nlink = row[12:14] if len(row) >= 14 else (0, 1)
            _check_relpath(path, str(rel))
            fact = FileFact(str(rel), int(dev), int(ino), int(size), float(mtime), float(atime), float(ctime),
                            int(mode), int(uid), int(gid), int(blocks), int(nlink))
            hold = None if held is None else held(os.path.join(root, fact.relpath))
            if hold is not None:
                late_holds.append(Skip(pp.name, os.path.join(root, fact.relpath), fact.size, "held", skip_reason(hold)))
                continue
            actions.add(fact, str(reason), detail if isinstance(detail, dict) else None)
        for _ in range(int(head["skips"])):
            spath, nbytes, code, reason = json.loads(src.readline())
            pp.skips.append(Skip(pp.name, str(spath), int(nbytes), str(code), str(reason)))
        pp.skips.extend(late_holds)
        policies.append(pp)
    if src.readline().strip():
        raise PlanRefused(f"plan {path} has data after its last policy")
    return Plan(policies, created=created, procfs_complete=bool(header["procfs_complete"]))


def _check_relpath(path: str, rel: str) -> None:
    parts = rel.split("/")
    if not rel or rel.startswith("/") or "\0" in rel or any(p in ("", ".", "..") for p in parts):
        raise PlanRefused(f"plan {path} names a file outside its policy path ({rel!r})")
