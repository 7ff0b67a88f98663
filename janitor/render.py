"""Results computed elsewhere, rendered here: rich tables for people, JSON for machines."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any

from .errors import OutputClosed
from .events import display_text, escape_undecodable
from .units import format_duration, format_size

if TYPE_CHECKING:
    from rich.console import Console

    from .catalog import Hold, JournalEntry
    from .config import Config
    from .events import EventLog
    from .plan import Plan, PlannedAction
    from .runner import RunReport
    from .trashops import TrashOpResult


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich's own handler exits 1; a reader that went away (`| head -1`) is not a
            # failure of the command: the CLI boundary decides the exit code.
            silence_stdout()
            raise OutputClosed()

    stream = sys.stderr if stderr else sys.stdout
    # Piped into grep or a log: never wrap lines; a terminal gets its own width.
    width = None if stream.isatty() else 4096
    return _Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def silence_stdout() -> None:
    """Point fd 1 at /dev/null so the final flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def heading(out: Console, text: str) -> None:
    """A rule with a title, never wider than a comfortable reading width. A title too long
    for the rule is printed whole on its own line under a plain rule: never cut with an
    ellipsis (it is often a command to copy)."""
    from rich.rule import Rule
    from rich.text import Text

    width = min(out.width, 100)
    if len(text) + 8 <= width:
        out.print(Rule(Text(text)), width=width)
    else:
        out.print(Rule(), width=width)
        out.print(Text(text, style="bold"), soft_wrap=True)


def plural(count: int, word: str, words: str | None = None) -> str:
    """'1 file', '2 files', '0 files' (`words` for irregular plurals: 'policy', 'policies')."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


def print_json(data: Any) -> None:
    try:
        json.dump(json_clean(data), sys.stdout, indent=2, ensure_ascii=False, default=str)
        sys.stdout.write("\n")  # an error of the final flush is the console script's (entry.py)
    except BrokenPipeError:
        silence_stdout()
        raise OutputClosed() from None


def json_clean(value: Any) -> Any:
    """Every string in the structure through escape_undecodable."""
    if isinstance(value, str):
        return escape_undecodable(value)
    if isinstance(value, dict):
        return {json_clean(k): json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_clean(v) for v in value]
    return value


def escape_markup(text: str) -> str:
    """`text` safe to print inside rich markup (a file name holding `[red]` stays text)."""
    from rich.markup import escape

    return escape(text)


def display_path(path: str) -> str:
    """A path as shown to people."""
    # undecodable bytes and control characters (a newline in a file name) shown escaped,
    # exactly as in `error:` lines (events.display_text)
    return display_text(path)


PLAN_ROWS = 50  # rows per policy in the terminal table unless --all (or --limit N)

# a reason's per-file figures ("mtime age 9d2h > 7d", "size 3 MiB > 1 MiB"): each row shows
# them in its own columns, so rows are grouped under the reason without them
_PER_FILE_FIGURE = re.compile(r"\b(age|size) [^,<>]*? ([<>]) ")


def reason_group(reason: str) -> str:
    """The part of a reason that many rows share (the row's own age and size left out)."""
    return _PER_FILE_FIGURE.sub(r"\1 \2 ", reason)


def plan_rows(limit: int | None, all_rows: bool = False) -> int | None:
    """Rows per policy from `--limit N` / `--all`: None for every row; a negative N is refused."""
    from .errors import UsageError

    if limit is not None and limit < 0:
        raise UsageError(f"--limit {limit}: give a number of rows (0 or --all: every row)")
    if all_rows or limit == 0:
        return None
    return PLAN_ROWS if limit is None else limit


def render_plan(plan: Plan, out: Console, *, limit: int | None = PLAN_ROWS, title: str = "Plan") -> None:
    """The plan for people: per policy, rows in the order the run will act, grouped by reason.

    At most `limit` action rows and `limit` skipped files per policy (None: every row,
    streamed line by line, so a plan of millions of files prints in constant memory); the
    totals always count everything.
    """
    now = plan.created
    write = out.file.write
    for pp in plan.policies:
        header = f"[bold]{escape_markup(pp.name)}[/] ({pp.action}) on {escape_markup(display_path(pp.root))}"
        out.print(header)
        if pp.error:
            out.print(f"  [red]error:[/] {escape_markup(display_path(pp.error))}")
            continue
        if pp.inactive:
            out.print(f"  [dim]inactive: {escape_markup(display_path(pp.inactive))}[/]")
        for note in pp.notes:
            out.print(f"  [dim]note: {escape_markup(display_path(note))}[/]")
        if pp.actions:
            width = max(len("action"), len(pp.action))
            out.print(f"  [bold]{'action':<{width}}  {'size':>10}  {'age':>8}  file[/]  (under each reason)")
            group = None
            shown = pp.actions if limit is None else pp.actions[:limit]
            for a in shown:
                detail = ""
                if a.detail:
                    detail = " [" + ", ".join(f"{k}={v}" for k, v in a.detail.items()) + "]"
                key = reason_group(a.reason) + detail
                if key != group:
                    group = key
                    write(f"  reason: {display_path(key)}\n")
                write(f"  {a.action:<{width}}  {format_size(a.fact.size):>10}  "
                      f"{format_duration(now - a.fact.mtime):>8}  {display_path(a.fact.relpath)}\n")
            if limit is not None and len(pp.actions) > limit:
                write(f"  ... {len(pp.actions) - limit} more: --all to list every row (--json for machines)\n")
        if pp.skips:
            out.print(f"  [yellow]skipped {len(pp.skips)}:[/]")
            # "file: reason", or the reason once above a run of files that share it
            shown_skips = pp.skips if limit is None else pp.skips[:limit]
            previous = None
            for i, s in enumerate(shown_skips):
                rel = display_path(os.path.relpath(s.path, pp.root))
                following = shown_skips[i + 1].reason if i + 1 < len(shown_skips) else None
                if s.reason == previous:
                    write(f"      {rel}\n")
                elif s.reason == following:
                    write(f"    {display_path(s.reason)}:\n      {rel}\n")
                else:
                    write(f"    {rel}: {display_path(s.reason)}\n")
                previous = s.reason
            if limit is not None and len(pp.skips) > limit:
                write(f"    ... {len(pp.skips) - limit} more: --all to list every row\n")
        total = f"  total: {plural(len(pp.actions), 'file')}, {format_size(pp.bytes)} (of {pp.matched} matching, {format_size(pp.matched_bytes)})"
        out.print(total)
        if pp.blocked:
            out.print(f"  [bold red]circuit breaker:[/] {escape_markup(display_path(pp.blocked))}")
        out.print()
    out.print(f"[bold]{title}: {plural(plan.total_files, 'file')}, {format_size(plan.total_bytes)} "
              f"in {plural(len(plan.policies), 'policy', 'policies')}[/]")
    if not plan.procfs_complete:
        out.print("[yellow]warning:[/] some processes could not be inspected (not root?): "
                  "files they keep open for writing may not be detected")


def write_plan_json(plan: Plan, stream: Any = None) -> None:
    """`plan --json`, streamed: the document `Plan.to_dict()` describes, written one action
    at a time, so the output never exists whole in memory."""
    out = sys.stdout if stream is None else stream
    write = out.write
    now = plan.created

    def dump(value: Any) -> str:
        return json.dumps(json_clean(value), ensure_ascii=False, default=str)

    head = {"created": plan.created, "files": plan.total_files, "bytes": plan.total_bytes,
            "open_files_fully_checked": plan.procfs_complete}
    write("{\n" + "".join(f"  {dump(k)}: {dump(v)},\n" for k, v in head.items()) + '  "policies": [')
    string = encode_basestring  # json's own (C) string encoder, as ensure_ascii=False uses
    for i, pp in enumerate(plan.policies):
        summary = pp.to_dict(now, rows=False)
        write(("," if i else "") + "\n    {" + ", ".join(f"{dump(k)}: {dump(v)}" for k, v in summary.items()))
        prefix = f'{{"policy": {string(escape_undecodable(pp.name))}, "action": {string(pp.action)}, "path": '

        def action_row(a: PlannedAction, prefix: str = prefix) -> str:
            # the document PlannedAction.to_dict describes, written directly: this runs once
            # per planned file (json.dumps of a dict per row costs several times more)
            if a.detail:
                return dump(a.to_dict(now))
            f = a.fact
            return (f"{prefix}{string(escape_undecodable(a.path))}, \"bytes\": {f.size}, "
                    f"\"age_seconds\": {float(round(now - f.mtime, 3))!r}, \"mtime\": {float(f.mtime)!r}, "
                    f"\"reason\": {string(escape_undecodable(a.reason))}}}")

        write(', "actions": [')
        write("\n    ]" if _write_action_rows(out, pp.actions, action_row) else "]")
        write(', "skips": [')
        write("\n    ]" if _write_rows(write, (dump(s.to_dict()) for s in pp.skips), False) else "]")
        write("}")
    write("\n  ]\n}\n")


def _write_rows(write: Callable[[str], Any], rows: Iterator[str], wrote: bool) -> bool:
    """JSON array elements, after `wrote` earlier ones; whether any element is written now."""
    # a thousand rows per write: one write per row was a sixth of the output's cost
    while chunk := list(islice(rows, 1024)):
        write(("," if wrote else "") + "\n      " + ",\n      ".join(chunk))
        wrote = True
    return wrote


# A policy with this many planned files has the second half of its rows rendered by a second
# process meanwhile (both cores: the rows are most of `plan --json`'s time at 1,000,000 files).
SPLIT_ROWS = 50_000


def _write_action_rows(out: Any, actions: Sequence[PlannedAction], action_row: Callable[[PlannedAction], str]) -> bool:
    n = len(actions)
    helper = _HalfRenderer.start(out, actions, action_row, n // 2, n) if n >= SPLIT_ROWS else None
    mid = n if helper is None else n // 2
    try:
        wrote = _write_rows(out.write, map(action_row, _actions_between(actions, 0, mid)), False)
    except BaseException:
        if helper is not None:
            helper.abandon()  # the output closed (`| head`), Ctrl-C: its rows are not wanted
        raise
    if helper is not None and not helper.copy_to(out):  # it failed: this process renders its half too
        wrote = _write_rows(out.write, map(action_row, _actions_between(actions, mid, n)), wrote)
    return wrote or helper is not None


def _actions_between(actions: Sequence[PlannedAction], start: int, stop: int) -> Iterator[PlannedAction]:
    """actions[start:stop], one at a time (a plan's ActionList makes each only as it is read)."""
    return (actions[i] for i in range(start, stop))


class _HalfRenderer:
    """Rows of a plan rendered by a forked process into an unnamed file (O_TMPFILE: it has
    no name anyone could open, swap or read) while this process renders the rows before them;
    then copied out after them. Any failure of it (no fork, no space) means this process
    renders those rows itself: the output is the same either way."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd = pid, fd

    @classmethod
    def start(cls, out: Any, actions: Sequence[PlannedAction], action_row: Callable[[PlannedAction], str],
              start: int, stop: int) -> _HalfRenderer | None:
        if threading.active_count() != 1:
            return None  # a fork copies no other thread: a lock one of them held would stay held
        try:
            buffer, encoding, errors = out.buffer, out.encoding, out.errors
            fd = os.open(tempfile.gettempdir(), os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except (AttributeError, OSError):
            return None  # no binary stream under it, or no unnamed file to be had here
        out.flush()
        buffer.flush()
        try:
            pid = os.fork()
        except OSError:
            os.close(fd)
            return None
        if pid == 0:  # never returns: ends with the rows written, or status 70
            status = 70
            try:
                with open(fd, "w", encoding=encoding, errors=errors, closefd=False) as text:
                    _write_rows(text.write, map(action_row, _actions_between(actions, start, stop)), True)
                status = 0
            except BaseException:  # noqa: BLE001 - said by the status: the parent renders them instead
                pass
            finally:
                os._exit(status)
        return cls(pid, fd)

    def abandon(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass  # it has exited already
        os.waitpid(self.pid, 0)
        os.close(self.fd)

    def copy_to(self, out: Any) -> bool:
        """Wait for it and write what it rendered to `out`; False (nothing written) if it failed."""
        try:
            _, status = os.waitpid(self.pid, 0)
            if status != 0:
                return False
            out.flush()
            os.lseek(self.fd, 0, os.SEEK_SET)
            with open(self.fd, "rb", closefd=False) as rendered:
                shutil.copyfileobj(rendered, out.buffer, 1 << 20)
            out.buffer.flush()
            return True
        finally:
            os.close(self.fd)


def render_run(report: RunReport, out: Console, events: EventLog | None = None) -> None:
    """The run's summary. With the run's event log: messages its text lines already
    printed on stderr are not repeated when stderr is where this goes too, and trash
    purged by `retain` is counted."""
    from rich.table import Table

    result = report.result
    if report.reconciled:
        out.print(f"settled {report.reconciled} journal entries left by an interrupted run")
    table = Table(title=f"run {result.run_id}", show_edge=False, box=None, header_style="bold")
    for col in ("policy", "action", "status", "files", "bytes", "skipped", "failed"):
        table.add_column(col, justify="right" if col in ("files", "bytes", "skipped", "failed") else "left")
    for p in result.policies:
        status = {"done": "[green]done[/]", "blocked": "[red]blocked[/]", "error": "[red]error[/]",
                  "stopped": "[green]stopped[/]", "inactive": "[dim]inactive[/]"}.get(p.status, p.status)
        table.add_row(escape_markup(p.name), p.action, status, str(p.files), format_size(p.bytes),
                      str(sum(p.skipped.values())), str(p.failed))
    out.print(table)
    # printed already where this summary goes (a terminal, the journal): not again
    shown = events.shown if events is not None and _stdout_is_stderr() else set()
    for p in result.policies:
        for message in p.messages[:20]:
            if message not in shown:
                out.print(f"  {escape_markup(p.name)}: {escape_markup(display_path(message))}")
        if p.skipped:
            reasons = ", ".join(f"{n} {code}" for code, n in p.skipped.most_common())
            out.print(f"  {escape_markup(p.name)}: skipped: {reasons}")
    purged = events.counts.get("trash_purged", 0) if events is not None else 0
    if purged:
        out.print(f"  retain: {plural(purged, 'file')} purged from the trash for good, "
                  f"{format_size(events.bytes.get('trash_purged', 0) if events is not None else 0)}")
    out.print(f"[bold]{plural(result.files, 'file')}, {format_size(result.bytes)}; "
              f"{plural(result.failed, 'failure')}[/]")


def _stdout_is_stderr() -> bool:
    """Whether stdout and stderr are one file (a terminal, systemd's journal stream, `2>&1`)."""
    try:
        out, err = os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)


def run_to_dict(report: RunReport, events: EventLog | None = None) -> dict[str, Any]:
    r = report.result
    return {
        "run_id": r.run_id,
        "files": r.files,
        "bytes": r.bytes,
        "failed": r.failed,
        "trash_purged": {"files": events.counts.get("trash_purged", 0) if events else 0,
                         "bytes": events.bytes.get("trash_purged", 0) if events else 0},
        "exit_code": r.exit_code,
        "reconciled": report.reconciled,
        "policies": [
            {"policy": p.name, "action": p.action, "status": p.status, "files": p.files, "bytes": p.bytes,
             "failed": p.failed, "skipped": dict(p.skipped), "messages": p.messages}
            for p in r.policies
        ],
    }


def entry_to_dict(e: JournalEntry) -> dict[str, Any]:
    return {
        "id": e.id, "run_id": e.run_id, "policy": e.policy, "action": e.action,
        "path": display_path(e.path), "bytes": e.size, "mtime": e.mtime, "state": e.state,
        "at": e.done_at or e.ts, "trash_path": display_path(e.trash_path) if e.trash_path else None,
        "target": e.target, "object_key": e.object_key, "error": e.error,
        "restored_at": e.restored_at, "purged_at": e.purged_at,
    }  # fmt: skip


def render_trash(entries: list[JournalEntry], out: Console) -> None:
    from rich.table import Table

    if not entries:
        out.print("the trash is empty")
        return
    table = Table(show_edge=False, box=None, header_style="bold")
    for col in ("trashed", "policy", "run", "file", "size"):
        table.add_column(col, justify="right" if col == "size" else "left", overflow="fold")
    now = time.time()
    for e in sorted(entries, key=lambda e: (e.run_id, e.policy, e.path)):  # oldest run first
        table.add_row(format_duration(now - (e.done_at or e.ts)) + " ago", escape_markup(e.policy), e.run_id,
                      escape_markup(display_path(e.path)), format_size(e.size))
    out.print(table)
    out.print(f"{plural(len(entries), 'file')}, {format_size(sum(e.size for e in entries))}")


def render_trash_op(verb: str, result: TrashOpResult, out: Console) -> None:
    for e in result.done:
        out.print(f"{verb} {escape_markup(display_path(e.path))}")
    for e, reason in result.failed:
        out.print(f"[red]not {verb}[/] {escape_markup(display_path(e.path))}: {escape_markup(reason)}")
    out.print(f"{len(result.done)} {verb} ({format_size(sum(e.size or 0 for e in result.done))}), "
              f"{len(result.failed)} failed")


def render_config(config: Config, out: Console) -> None:
    out.print(f"[green]valid:[/] {plural(len(config.policies), 'policy', 'policies')}, "
              f"{plural(len(config.targets), 'target')} from {plural(len(config.sources), 'file')}")
    for p in config.policies:
        flag = "" if p.enabled else " [dim](disabled)[/]"
        out.print(f"  {escape_markup(p.name)}: {p.action} on {escape_markup(display_path(p.path))}{flag}")


def render_history(entries: list[JournalEntry], out: Console, roots: dict[str, str] | None = None) -> None:
    """One block per run and policy (run id, date, policy and its path on a line of their
    own), then one narrow row per file, named relative to the policy path: fits ~120 columns
    for ordinary paths. --json has every field, with full paths."""
    from rich.table import Table

    from .history import where_now

    if not entries:
        out.print("no history matches")
        return
    roots = roots or {}
    blocks: dict[tuple[str, str], list[JournalEntry]] = {}
    for e in entries:
        blocks.setdefault((e.run_id, e.policy), []).append(e)
    for (run_id, policy), rows in blocks.items():
        day = time.strftime("%Y-%m-%d", time.localtime(rows[-1].done_at or rows[-1].ts))
        root = roots.get(policy)
        where = f" on {escape_markup(display_path(root))}" if root else ""
        out.print(f"[bold]run {run_id}[/] ({day}), policy [bold]{escape_markup(policy)}[/]{where}")
        table = Table(show_edge=False, box=None, header_style="bold", pad_edge=False)
        for col in ("  time", "action", "file", "size", "where now"):
            table.add_column(col, justify="right" if col == "size" else "left", overflow="fold")
        for e in rows:
            shown = os.path.relpath(e.path, root) if root and e.path.startswith(root.rstrip("/") + "/") else e.path
            table.add_row("  " + time.strftime("%H:%M:%S", time.localtime(e.done_at or e.ts)), e.action,
                          escape_markup(display_path(shown)), format_size(e.size or 0),
                          escape_markup(display_path(_short_where(e, where_now(e)))))
        out.print(table)
    out.print(plural(len(entries), "entry", "entries"))


def _short_where(entry: JournalEntry, where: str) -> str:
    # the trash copy's full path is long and only useful to scripts: --json has it
    if entry.trash_path and where.startswith("in the trash at "):
        return f"in the trash at {os.path.dirname(entry.trash_path) and '.../'}{os.path.basename(entry.trash_path)}"
    return where


def render_holds(holds: Sequence[Hold], json_out: bool, *, verb: str | None = None) -> int:
    """Print holds (a table, or JSON); returns the exit code (0)."""
    rows = [{"pattern": h.pattern, "glob": h.is_glob, "until": h.until, "reason": h.reason} for h in holds]
    if json_out:
        print_json(rows)
        return 0
    out = console()
    if not holds:
        out.print("no holds" if verb is None else f"nothing {verb}")
        return 0
    for h in holds:
        prefix = f"{verb} " if verb else ""
        out.print(f"{prefix}{h.pattern}  until {h.until_text()}  ({h.reason})", markup=False, highlight=False)
    return 0
