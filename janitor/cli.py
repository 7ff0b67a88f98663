"""The command line: thin commands over the library, one error boundary in `main()`.

Each command parses options, calls one library function and renders the result.
Heavy modules are imported inside commands. The console entry point is janitor/entry.py,
which runs a plain `janitor guard ...` without importing this module (typer) at all.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Optional, TextIO

import typer

from .errors import (
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    ConfigError,
    OutputClosed,
    UsageError,
)
from .failures import report_error

if TYPE_CHECKING:
    from .config import Config
    from .events import EventLog

def _metavar_replaces_type() -> None:
    """typer prints an argument's Python type after its name (`GLOB... <list[str]>`) even
    when a metavar says what to give: with a metavar, show just the metavar, as options do."""
    from typer.core import TyperArgument

    shown = TyperArgument.display_type_rich

    def display_type_rich(self: TyperArgument, ctx: typer.Context) -> str | None:
        return None if self.metavar else shown(self, ctx)

    TyperArgument.display_type_rich = display_type_rich  # type: ignore[method-assign,assignment]


_metavar_replaces_type()

app = typer.Typer(
    name="janitor",
    help="Storage-lifecycle janitor: clean, archive, truncate and cap what services leave on disk.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
trash_app = typer.Typer(help="Inspect and purge the trash.", no_args_is_help=True)
app.add_typer(trash_app, name="trash")
archive_app = typer.Typer(help="Manage archive targets (retention rules in the store).", no_args_is_help=True)
app.add_typer(archive_app, name="archive")


@dataclass
class GlobalOptions:
    debug: bool = False
    log_format: str | None = None
    log_file: str | None = None
    verbose: bool = False
    # What the error boundary in main() needs to know about the command that ran: the
    # configuration (for settings.log_format/log_file), its event log (did it already log
    # the failure?) and the exit code its result means if stdout goes away while printing.
    config: Config | None = None
    events: EventLog | None = None
    exit_code: int = EXIT_OK


OPTS = GlobalOptions()

ConfigOpt = Annotated[
    Optional[str],
    typer.Option("--config", "-c", metavar="PATH", help="Policy file or directory of *.yaml files. Default: $JANITOR_CONFIG, else /etc/janitor/.",
                 show_default=False),
]
PolicyOpt = Annotated[
    Optional[list[str]],
    typer.Option("--policy", "-p", metavar="NAME", help="Only this policy (repeatable).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of tables.")]


def _print_version(value: bool) -> None:
    # Eager: runs while the options are parsed, so `janitor --version` needs no command.
    if value:
        from . import __version__

        print(f"janitor {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    log_format: Annotated[
        Optional[str],
        typer.Option("--log-format", metavar="FORMAT", help="Event log on stderr: text (default) or json. Also $JANITOR_LOG_FORMAT.",
                     show_default=False),
    ] = None,
    log_file: Annotated[
        Optional[str], typer.Option("--log-file", metavar="PATH", show_default=False,
                                        help="Append JSON event lines to this file (created with settings.log_file_mode, "
                                             "default 0640).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print every file event in text mode.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    """Storage-lifecycle janitor: clean, archive, truncate and cap what services leave on disk."""
    OPTS.debug = OPTS.debug or debug
    OPTS.log_format = OPTS.log_format or log_format
    OPTS.log_file = OPTS.log_file or log_file
    OPTS.verbose = OPTS.verbose or verbose


def _load(config_path: str | None, *, strict: bool = False) -> Config:
    from . import plugins
    from .config import load_config

    plugins.load()  # the actions named in policy files
    OPTS.config = load_config(config_path, strict=strict)
    return OPTS.config


def _events(config: Config | None = None) -> EventLog:
    from .events import event_log_for

    OPTS.events = event_log_for(config, fmt=OPTS.log_format, log_file=OPTS.log_file, verbose=OPTS.verbose)
    return OPTS.events


def _command_id() -> str:
    """The `run_id` of the events of a command outside a run (restore, trash purge): an id
    in the same form, shared by all its events, so a log pipeline can group them. It is
    not a run of the catalog's (`history --run` does not know it); each event about a
    file names the run that trashed or archived it in `run`."""
    from .runner import new_run_id

    return new_run_id()


_PROBLEM_RE = r"^(?P<file>[^:]+?):(?P<line>\d+): (?P<message>.*)$"


def problem_to_dict(problem: str) -> dict[str, object]:
    """'policies/app.yaml:14: policies[2].older_than: ...' as {file, line, message}."""
    import re

    m = re.match(_PROBLEM_RE, problem, re.S)
    if m is None:
        return {"file": None, "line": None, "message": problem}
    return {"file": m["file"], "line": int(m["line"]), "message": m["message"]}


@app.command()
def validate(
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    strict: Annotated[bool, typer.Option("--strict", help="Treat warnings (a policy path that does not exist, "
                                         "a delete with no age or size filter) as errors: exit 2.")] = False,
) -> int:
    """Check policy files. Errors name file, line and field; exit 2 when any is found."""
    from .render import console, print_json, render_config

    try:
        cfg = _load(config, strict=strict)
    except ConfigError as exc:
        if not json_out:
            raise
        from .failures import log_failure

        OPTS.exit_code = exc.exit_code
        # the result is on stdout; a JSON log or log file also gets the failure
        n = len(exc.problems)
        log_failure("validate", exc.code, f"{n} problem{'s' if n != 1 else ''} in the policy files", exc.problems,
                    OPTS.log_format, OPTS.log_file, None)
        print_json({"valid": False, "problems": [problem_to_dict(p) for p in exc.problems]})
        return exc.exit_code
    if json_out:
        print_json({"valid": True, "policies": [p.name for p in cfg.policies], "targets": list(cfg.targets),
                    "files": list(cfg.sources), "warnings": list(cfg.warnings)})
    else:
        for warning in cfg.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        render_config(cfg, console())
    return EXIT_OK


@app.command()
def plan(
    config: ConfigOpt = None,
    policy: PolicyOpt = None,
    json_out: JsonOpt = False,
    limit: Annotated[Optional[int], typer.Option(
        metavar="N", help="Rows shown per policy in tables (default 50; 0: all).", show_default=False)] = None,
    all_rows: Annotated[bool, typer.Option("--all", help="List every row (streamed).")] = False,
    out: Annotated[Optional[str], typer.Option(
        "--out", metavar="FILE", help="Also save the plan here, for `janitor run --plan FILE`.",
        show_default=False)] = None,
) -> int:
    """Show exactly what `run` would do, and what it would skip and why. Changes nothing."""
    from .planner import build_plan
    from .render import console, plan_rows, render_plan, write_plan_json

    rows = plan_rows(limit, all_rows)
    cfg = _load(config)
    the_plan = build_plan(cfg, cfg.select(policy))
    # a policy that cannot run (its path a symlink, unreadable...) fails `run` with exit 1:
    # its plan says so with the same exit code
    OPTS.exit_code = EXIT_PARTIAL if any(pp.error for pp in the_plan.policies) else EXIT_OK
    if out:
        from .savedplan import write_plan

        write_plan(the_plan, cfg, out)
        print(f"plan saved to {out}: `janitor run --plan {out}` executes exactly this plan", file=sys.stderr)
    if json_out:
        write_plan_json(the_plan)
    else:
        render_plan(the_plan, console(), limit=rows)
    return OPTS.exit_code


@app.command()
def run(
    config: ConfigOpt = None,
    policy: PolicyOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Only show the plan (same as `janitor plan`).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Run policies the circuit breaker stopped.")] = False,
    json_out: JsonOpt = False,
    limit: Annotated[Optional[int], typer.Option(
        metavar="N", help="With --dry-run: rows shown per policy (default 50; 0: all).", show_default=False)] = None,
    metrics_file: Annotated[Optional[str], typer.Option(
        "--metrics-file", metavar="PATH", help="Write Prometheus textfile metrics here (default: settings.metrics_file).",
        show_default=False)] = None,
    plan_file: Annotated[Optional[str], typer.Option(
        "--plan", metavar="FILE", help="Execute this plan saved by `janitor plan --out` (and nothing else).",
        show_default=False)] = None,
    max_age: Annotated[str, typer.Option(
        "--max-age", metavar="DURATION", help="With --plan: refuse a plan older than this.")] = "24h",
) -> int:
    """Do the work: lock, plan, re-check each file, act, journal. Exit 1 if anything failed."""
    if dry_run:
        return plan(config=config, policy=policy, json_out=json_out, limit=limit)
    from .render import console, print_json, render_run, run_to_dict
    from .runner import run_policies

    cfg = _load(config)
    saved = None
    if plan_file:
        from .savedplan import load_plan
        from .units import parse_duration

        if policy:
            raise UsageError("--plan runs the policies of the saved plan: --policy cannot be combined with it")
        try:
            max_age_s = parse_duration(max_age)
        except ValueError as exc:
            raise UsageError(f"--max-age: {exc}") from None
        saved = load_plan(plan_file, cfg, max_age=max_age_s)
        policy = [pp.name for pp in saved.policies]
    events = _events(cfg)
    try:
        report = run_policies(cfg, cfg.select(policy), events, force=force, metrics_file=metrics_file,
                              saved_plan=saved)
    finally:
        events.close()
    OPTS.exit_code = report.result.exit_code
    if json_out:
        print_json(run_to_dict(report, events))
    else:
        render_run(report, console(), events)
    return report.result.exit_code


@app.command()
def restore(
    patterns: Annotated[Optional[list[str]], typer.Argument(metavar="GLOB", help="Original paths or globs (e.g. '/srv/out/*.mp4').",
                                                             show_default=False)] = None,
    config: ConfigOpt = None,
    policy: PolicyOpt = None,
    run_id: Annotated[Optional[str], typer.Option("--run", metavar="RUN_ID", help="Only files trashed by this run.", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Everything in the trash (or the archive).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite files that exist at the original path.")] = False,
    from_archive: Annotated[bool, typer.Option("--from-archive", help="Download archived files from their target "
                                                                      "instead of taking them from the trash.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Only say what would be restored: which files, "
                                                                   "how many, how many bytes.")] = False,
    version: Annotated[Optional[str], typer.Option(
        "--version", metavar="KEY|TIME",
        help="With --from-archive: the archived copy to restore, by object key (or its @ suffix) or by time "
             "(2026-12-01, 3d: the newest archived then or before); default the newest.",
        show_default=False)] = None,
    json_out: JsonOpt = False,
    hold: Annotated[Optional[str], typer.Option(
        "--hold", metavar="DURATION", help="Hold restored files this long: no policy touches them "
        "(default: settings.restore_hold, 30d).", show_default=False)] = None,
    no_hold: Annotated[bool, typer.Option("--no-hold", help="Do not hold restored files.")] = False,
) -> int:
    """Put soft-deleted (or, with --from-archive, archived) files back at their original path
    with their mtime and mode, and hold them so the next run does not take them again."""
    from .render import console, entry_to_dict, print_json, render_trash_op
    from .runner import locked_state
    from .trashops import TrashOpResult, require_filter, restore_entries, select_trash

    require_filter(patterns, policy, run_id, all_)
    if version is not None and not from_archive:
        raise UsageError("--version chooses an archived copy: use it with --from-archive")
    hold_for = _hold_duration(hold, no_hold)
    cfg = _load(config)
    if dry_run:
        return _dry_run("restore", cfg, json_out, patterns=patterns, policies=policy, run_id=run_id,
                        from_archive=from_archive)
    events = _events(cfg)
    events.bind(_command_id())
    result: TrashOpResult
    with locked_state(cfg) as catalog:
        if from_archive:
            from .archiveops import restore_from_archive, select_archived

            entries = select_archived(catalog, patterns=patterns, policies=policy, run_id=run_id, version=version)
            result = restore_from_archive(catalog, cfg, entries, events, force=force)
        else:
            entries = select_trash(catalog, patterns=patterns, policies=policy, run_id=run_id)
            result = restore_entries(catalog, entries, events, force=force, config=cfg)
        from .holds import hold_restored

        hold_restored(catalog, result.done, cfg.settings.restore_hold if hold_for is None else hold_for)
    OPTS.exit_code = EXIT_PARTIAL if result.failed else EXIT_OK
    if json_out:
        print_json({"restored": [entry_to_dict(e) for e in result.done],
                    "already": [entry_to_dict(e) for e in getattr(result, "already", [])],
                    "failed": [{**entry_to_dict(e), "reason": r} for e, r in result.failed]})
    else:
        if not entries:
            console().print("nothing in the archive matches" if from_archive else "nothing in the trash matches")
        if from_archive:
            from .archiveops import render_archive_restore

            render_archive_restore(result, console())
        else:
            render_trash_op("restored", result, console())
    return EXIT_PARTIAL if result.failed else EXIT_OK


def _dry_run(verb: str, cfg: Config, json_out: bool, *, patterns: list[str] | None = None,
             policies: list[str] | None = None, run_id: str | None = None, older_than: float | None = None,
             from_archive: bool = False) -> int:
    """What `restore`/`trash purge` would act on, read from the catalog alone: nothing is
    locked, moved or deleted (as `trash list`, it reads without the run lock)."""
    from .catalog import existing_catalog
    from .render import console, entry_to_dict, plural, print_json
    from .render import display_path as shown
    from .units import format_size

    with existing_catalog(cfg.settings.state_dir) as catalog:
        if catalog is None:
            entries = []
        elif from_archive:
            from .archiveops import select_archived

            entries = select_archived(catalog, patterns=patterns, policies=policies, run_id=run_id)
        else:
            from .trashops import select_trash

            entries = select_trash(catalog, patterns=patterns, policies=policies, run_id=run_id, older_than=older_than)
    if verb == "restore":  # as restore does: the newest entry per original path
        latest: dict[str, object] = {}
        for e in sorted(entries, key=lambda e: e.id):
            latest[e.path] = e
        entries = [e for e in entries if latest[e.path] is e]
    entries.sort(key=lambda e: (e.run_id, e.policy, e.path))
    total = sum(e.size or 0 for e in entries)
    if json_out:
        print_json({"dry_run": True, f"would_{verb}": [entry_to_dict(e) for e in entries], "files": len(entries),
                    "bytes": total})
        return EXIT_OK
    out = console()
    for e in entries:
        out.print(f"would {verb} {shown(e.path)} ({format_size(e.size or 0)})", markup=False)
    source = "the archive" if from_archive else "the trash"
    out.print(f"dry run: {plural(len(entries), 'file')}, {format_size(total)} would be "
              f"{'restored from ' + source if verb == 'restore' else 'purged from the trash'}; nothing changed")
    return EXIT_OK
def _hold_duration(hold: str | None, no_hold: bool) -> float | None:
    """restore's --hold/--no-hold: seconds, 0 for no hold, None for the configured default."""
    from .units import parse_duration

    if no_hold and hold is not None:
        raise UsageError("give --hold DURATION or --no-hold, not both")
    if no_hold:
        return 0.0
    try:
        return None if hold is None else parse_duration(hold)
    except ValueError as exc:
        raise UsageError(f"--hold: {exc}") from None


@app.command("hold")
def hold_cmd(
    patterns: Annotated[Optional[list[str]], typer.Argument(
        metavar="GLOB", help="Absolute paths or globs under a policy path (e.g. '/srv/out/2026-12/**').",
        show_default=False)] = None,
    config: ConfigOpt = None,
    for_: Annotated[str, typer.Option("--for", metavar="DURATION", help="How long the hold lasts.")] = "30d",
    reason: Annotated[Optional[str], typer.Option(metavar="REASON", help="Shown in the plan next to each held file.",
                                                  show_default=False)] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the holds in force.")] = False,
    json_out: JsonOpt = False,
) -> int:
    """Hold files: no policy acts on what GLOB selects until the hold ends (the plan says so)."""
    from .holds import add_holds
    from .render import render_holds
    from .units import parse_duration

    cfg = _load(config)
    if list_ or not patterns:
        if patterns:
            raise UsageError("--list takes no GLOB")
        from .catalog import existing_catalog

        with existing_catalog(cfg.settings.state_dir) as catalog:
            return render_holds([] if catalog is None else catalog.holds(), json_out)
    try:
        seconds = parse_duration(for_)
    except ValueError as exc:
        raise UsageError(f"--for: {exc}") from None
    with _holds_catalog(cfg) as catalog:
        made = add_holds(cfg, catalog, patterns, seconds, reason or "held by janitor hold")
    return render_holds(made, json_out, verb="held")


@app.command("unhold")
def unhold_cmd(
    patterns: Annotated[list[str], typer.Argument(
        metavar="GLOB", help="A held pattern as given to `hold`, or a glob selecting held files.")],
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Release holds (see `janitor hold --list`)."""
    from .holds import remove_holds
    from .render import render_holds

    cfg = _load(config)
    with _holds_catalog(cfg) as catalog:
        gone = remove_holds(catalog, patterns)
    return render_holds(gone, json_out, verb="released")


def _holds_catalog(cfg: Config) -> Any:
    """The catalog for writing holds: no run lock needed (SQLite serialises the writes)."""
    from contextlib import closing

    from .catalog import open_catalog
    from .state import ensure_private_dir

    ensure_private_dir(cfg.settings.state_dir)
    return closing(open_catalog(cfg.settings.state_dir))


@trash_app.command("list")
def trash_list(
    config: ConfigOpt = None,
    policy: PolicyOpt = None,
    run_id: Annotated[Optional[str], typer.Option("--run", metavar="RUN_ID", help="Only files trashed by this run.", show_default=False)] = None,
    json_out: JsonOpt = False,
) -> int:
    """List files in the trash: when, by which policy and run, from where."""
    from .catalog import existing_catalog
    from .render import console, entry_to_dict, print_json, render_trash
    from .trashops import select_trash

    cfg = _load(config)
    with existing_catalog(cfg.settings.state_dir) as catalog:
        entries = [] if catalog is None else select_trash(catalog, policies=policy, run_id=run_id)
    entries.sort(key=lambda e: (e.run_id, e.policy, e.path))  # oldest run first, then by name
    if json_out:
        print_json([entry_to_dict(e) for e in entries])
    else:
        render_trash(entries, console())
    return EXIT_OK


@trash_app.command("purge")
def trash_purge(
    patterns: Annotated[Optional[list[str]], typer.Argument(metavar="GLOB", help="Original paths or globs (e.g. '/srv/out/**/*.mp4').",
                                                             show_default=False)] = None,
    config: ConfigOpt = None,
    policy: PolicyOpt = None,
    run_id: Annotated[Optional[str], typer.Option("--run", metavar="RUN_ID", help="Only files trashed by this run.", show_default=False)] = None,
    older_than: Annotated[Optional[str], typer.Option(metavar="DURATION", help="Only files trashed longer ago than this (e.g. 14d).",
                                                      show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Everything in the trash.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Only say what would be purged: which files, "
                                                                   "how many, how many bytes.")] = False,
    json_out: JsonOpt = False,
) -> int:
    """Delete trashed files for good."""
    from .render import console, entry_to_dict, print_json, render_trash_op
    from .runner import locked_state
    from .trashops import purge_entries, require_filter, select_trash
    from .units import parse_duration

    require_filter(patterns, policy, run_id, all_ or older_than is not None, verb="purge", older_than=True)
    try:
        age = None if older_than is None else parse_duration(older_than)
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    cfg = _load(config)
    if dry_run:
        return _dry_run("purge", cfg, json_out, patterns=patterns, policies=policy, run_id=run_id, older_than=age)
    events = _events(cfg)
    events.bind(_command_id())
    with locked_state(cfg) as catalog:
        entries = select_trash(catalog, patterns=patterns, policies=policy, run_id=run_id, older_than=age)
        result = purge_entries(catalog, entries, events)
    OPTS.exit_code = EXIT_PARTIAL if result.failed else EXIT_OK
    if json_out:
        print_json({"purged": [entry_to_dict(e) for e in result.done],
                    "bytes": sum(e.size or 0 for e in result.done),
                    "failed": [{**entry_to_dict(e), "reason": r} for e, r in result.failed]})
    else:
        render_trash_op("purged", result, console())
    return EXIT_PARTIAL if result.failed else EXIT_OK


@archive_app.command("lifecycle")
def archive_lifecycle(
    target: Annotated[str, typer.Option("--target", "-t", metavar="NAME", help="Target name from the policy files.", show_default=False)],
    config: ConfigOpt = None,
    expire_after: Annotated[Optional[str], typer.Option(metavar="DURATION", help="Delete archived objects this long after upload "
                                                         "(whole days, e.g. 365d).", show_default=False)] = None,
    transition_after: Annotated[Optional[str], typer.Option(metavar="DURATION", help="Move objects to --storage-class this long after "
                                                             "upload (e.g. 30d).", show_default=False)] = None,
    storage_class: Annotated[Optional[str], typer.Option(metavar="CLASS", help="Storage class for --transition-after (e.g. GLACIER).",
                                                          show_default=False)] = None,
    show: Annotated[bool, typer.Option("--show", help="Print the bucket's current lifecycle rules.")] = False,
    json_out: JsonOpt = False,
) -> int:
    """Write a bucket lifecycle rule for the target's prefix (expiry, optional transition), or --show the rules."""
    from .archiveops import lifecycle_rule_line, set_lifecycle, show_lifecycle
    from .render import print_json
    from .units import parse_duration

    if not show and expire_after is None:
        raise UsageError("give --expire-after (e.g. 365d), or --show to print the current rules")

    def duration(option: str, value: str | None) -> float | None:
        try:
            return None if value is None else parse_duration(value)
        except ValueError as exc:
            raise UsageError(f"{option}: {exc}") from None

    cfg = _load(config)
    if show and expire_after is None:
        result = show_lifecycle(cfg, target)
    else:
        expire = duration("--expire-after", expire_after)
        assert expire is not None
        result = set_lifecycle(cfg, target, expire_after=expire,
                               transition_after=duration("--transition-after", transition_after),
                               storage_class=storage_class)
    if json_out:
        print_json({"target": result.target, "where": result.where, "written": result.written, "rules": result.rules})
        return EXIT_OK
    # plain lines, never wrapped: operators grep and paste these
    if result.written is not None:
        print(f"wrote {lifecycle_rule_line(result.written)}")
    if show or result.written is None:
        print(f"lifecycle rules of {result.where}:")
        for rule in result.rules:
            print(f"  {lifecycle_rule_line(rule)}")
        if not result.rules:
            print("  (none)")
    return EXIT_OK


@app.command()
def report(
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    html_file: Annotated[Optional[str], typer.Option("--html", metavar="PATH", help="Also write a self-contained HTML page here.",
                                                     show_default=False)] = None,
) -> int:
    """Storage health per policy path: usage, ages, largest files, what policies would free, trash, last run."""
    from .render import console, print_json
    from .report import build_report, render_report
    from .web import render_report_html

    cfg = _load(config)
    result = build_report(cfg)
    if html_file:
        tmp = html_file + ".tmp"
        # undecodable bytes in file names are shown as \xNN rather than breaking the page
        with open(tmp, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(render_report_html(result, cfg).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
        os.replace(tmp, html_file)
    if json_out:
        print_json(result.to_dict())
    else:
        render_report(result, console())
        if html_file:
            console().print(f"HTML report: {html_file}")
    return EXIT_OK


@app.command()
def history(
    config: ConfigOpt = None,
    policy: PolicyOpt = None,
    since: Annotated[Optional[str], typer.Option(metavar="DURATION", help="Only what happened within this long (e.g. 7d).",
                                                 show_default=False)] = None,
    path: Annotated[Optional[str], typer.Option(metavar="GLOB", help="Only paths matching this glob (e.g. '*/render_1017.mp4').",
                                                show_default=False)] = None,
    run_id: Annotated[Optional[str], typer.Option("--run", metavar="RUN_ID", help="Only this run.", show_default=False)] = None,
    limit: Annotated[int, typer.Option(metavar="N", help="At most this many entries, newest first (0: all).")] = 1000,
    json_out: JsonOpt = False,
) -> int:
    """What happened to which file, when, in which run, and where it is now."""
    from .catalog import existing_catalog
    from .history import query_history
    from .render import console, print_json, render_history
    from .units import parse_duration

    try:
        since_s = None if since is None else parse_duration(since)
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None
    cfg = _load(config)
    with existing_catalog(cfg.settings.state_dir) as catalog:
        entries = [] if catalog is None else query_history(
            catalog, policies=policy, since=since_s, path_glob=path, run_id=run_id, limit=limit or None)
    if json_out:
        from .history import where_now
        from .render import entry_to_dict

        print_json([{**entry_to_dict(e), "where_now": where_now(e)} for e in entries])
    else:
        render_history(entries, console(), {p.name: p.path for p in cfg.policies})
    return EXIT_OK


@app.command()
def guard(
    path: Annotated[Optional[list[str]], typer.Option(
        "--path", metavar="DIR", help="A directory whose filesystem to check (repeatable; pair each with --max-used).",
        show_default=False)] = None,
    max_used: Annotated[Optional[list[str]], typer.Option(
        "--max-used", metavar="PCT", help="Highest acceptable use of the --path in the same position, e.g. 80%.",
        show_default=False)] = None,
    min_free: Annotated[Optional[str], typer.Option(
        "--min-free", metavar="SIZE", help="Least acceptable free space (e.g. 5GiB) on every --path, or on every policy path.",
        show_default=False)] = None,
    config: ConfigOpt = None,
    clean: Annotated[bool, typer.Option(
        "--clean", help="Run the configured policies first, then check.")] = False,
    lock_timeout: Annotated[float, typer.Option(
        "--lock-timeout", metavar="SECONDS", help="With --clean: seconds to wait for a janitor run holding the lock (exit 3 after).",
    )] = 60.0,
) -> int:
    """Pre-start disk check for ExecStartPre=: exit 0 if fine, 1 if a filesystem is over its threshold.

    Thresholds: --path DIR --max-used PCT pairs and/or --min-free SIZE; without --path,
    settings.guard_max_used on every policy path and each policy's when_disk_above.
    Exit 2 for a bad command line, 3 if --clean could not get the lock in time.
    """
    # `janitor guard ...` normally never gets here: janitor/entry.py runs it without typer
    # for speed. This command gives it help text and click's usage errors.
    from .guard import GuardRequest, run_guard
    from .plugins import load_policy_files

    return run_guard(GuardRequest(
        paths=path, max_used=max_used, min_free=min_free, config=config, clean=clean,
        lock_timeout=lock_timeout, verbose=OPTS.verbose, debug=OPTS.debug,
        log_format=OPTS.log_format, log_file=OPTS.log_file,
    ), load_policy_files)


@app.command()
def serve(
    config: ConfigOpt = None,
    listen: Annotated[str, typer.Option(
        "--listen", metavar="ADDR", help="HOST:PORT (default 127.0.0.1:8427) or unix:/path/to.sock.")] = "127.0.0.1:8427",
    token_file: Annotated[Optional[str], typer.Option(
        "--token-file", metavar="FILE", help="Bearer token, in a file we own with mode 0600.", show_default=False)] = None,
    no_auth: Annotated[bool, typer.Option(
        "--no-auth", help="Serve without a token (only on loopback or a Unix socket).")] = False,
    metrics_no_auth: Annotated[bool, typer.Option(
        "--metrics-no-auth", help="Let /metrics and /readyz be read without the token (scrapers, probes).")] = False,
    sample_interval: Annotated[str, typer.Option(
        "--sample-interval", metavar="DURATION", help="Record a storage sample and check warn thresholds this often "
                                                    "(0: only after runs).")] = "5m",
) -> int:
    """HTTP API, /healthz, /readyz, /metrics and the storage dashboard (docs/api.md)."""
    from .server import ServeOptions
    from .server import serve as run_server
    from .units import parse_duration

    try:
        interval = parse_duration(sample_interval) if sample_interval not in ("0", "0s") else 0.0
    except ValueError as exc:
        raise UsageError(f"--sample-interval: {exc}") from None
    return run_server(ServeOptions(config, listen, token_file, no_auth, metrics_no_auth, interval,
                                   log_format=OPTS.log_format or "json"))


@app.command()
def demo(
    directory: Annotated[Optional[str], typer.Option("--dir", metavar="DIR", help="Build the sandbox in this new or empty directory (or one an "
                                                     "earlier --keep left) instead of a temp dir.",
                                                     show_default=False)] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the sandbox in place afterwards.")] = False,
) -> int:
    """A guided tour on a realistic sandbox: no server, no root needed."""
    from .demo import run_demo

    return run_demo(directory, keep=keep)


_GLOBAL_FLAGS = {"--debug": "debug", "--verbose": "verbose", "-v": "verbose"}
_GLOBAL_VALUES = {"--log-format": "log_format", "--log-file": "log_file"}


def _hoist_global_options(argv: list[str]) -> list[str]:
    """Accept global options after the command too (`janitor run --log-format json`)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out.extend(argv[i:])
            break
        if arg in _GLOBAL_FLAGS:
            setattr(OPTS, _GLOBAL_FLAGS[arg], True)
        elif arg in _GLOBAL_VALUES and i + 1 < len(argv):
            setattr(OPTS, _GLOBAL_VALUES[arg], argv[i + 1])
            i += 1
        elif "=" in arg and arg.split("=", 1)[0] in _GLOBAL_VALUES:
            key, value = arg.split("=", 1)
            setattr(OPTS, _GLOBAL_VALUES[key], value)
        else:
            out.append(arg)
        i += 1
    return out


class _StdoutGuard:
    """sys.stdout for the duration of a command: a reader that went away (EPIPE) becomes
    OutputClosed, whoever writes (rich, json.dump, a plain print), instead of click's exit 1."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._closed = False

    def write(self, text: str) -> int:
        if self._closed:
            return len(text)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_gone()
            raise OutputClosed() from None

    def flush(self) -> None:
        if self._closed:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()
            raise OutputClosed() from None

    def _reader_gone(self) -> None:
        from .render import silence_stdout

        self._closed = True
        silence_stdout()

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: the one place exceptions become messages and exit codes."""
    try:  # typer >= 0.25 carries its own copy of click
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover - older typer
        from click import exceptions as click_exc  # type: ignore[no-redef]

    args = _hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    command = next((a for a in args if not a.startswith("-")), None)
    real_stdout = sys.stdout
    if real_stdout is not None:
        sys.stdout = _StdoutGuard(real_stdout)
    try:
        code = app(args=args, prog_name="janitor", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except OutputClosed:
        # the reader of stdout went away (`janitor plan | head -1`): the command's own
        # result decides the exit code, not the closed pipe
        code = OPTS.exit_code
    except click_exc.ClickException as exc:
        code = EXIT_USAGE if isinstance(exc, click_exc.UsageError) else exc.exit_code
        from .failures import log_failure

        if not log_failure(command, "E_USAGE", exc.format_message(), None, OPTS.log_format, OPTS.log_file, None):
            exc.show()
    except typer.Abort:
        print("janitor: aborted", file=sys.stderr)
        code = 130
    except (Exception, KeyboardInterrupt) as exc:
        logged = OPTS.events is not None and bool(OPTS.events.counts.get("run_failed"))
        code = report_error(exc, OPTS.debug, command=command, log_format=OPTS.log_format, log_file=OPTS.log_file,
                            config=OPTS.config, already_logged=logged)
    finally:
        if real_stdout is not None:
            try:
                sys.stdout.flush()  # while OutputClosed can still be told from a failure
            except OutputClosed:
                pass
            except OSError:
                pass  # left to the console script's final flush, which reports it (exit 120)
            sys.stdout = real_stdout
    sys.exit(code if isinstance(code, int) else EXIT_OK)
