"""Every command and subcommand has help text, and its options read NAME, PATH, GLOB,
DURATION, SIZE, PCT... rather than typer's `<str>`, `<list[str]>`, `<int>` (issue 12)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer.main

from janitor.cli import app


def _commands() -> list[tuple[list[str], Any]]:
    """(words, click command) for the app and every command below it (typer's own click)."""
    out: list[tuple[list[str], Any]] = []

    def walk(path: list[str], cmd: Any) -> None:
        out.append((path, cmd))
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk([*path, name], sub)

    walk([], typer.main.get_command(app))
    return out


COMMANDS = _commands()


def test_the_tree_has_every_command() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"validate", "plan", "run", "restore", "report", "history", "guard", "demo", "trash list",
            "trash purge", "archive lifecycle"} <= names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) or "janitor" for p, _ in COMMANDS])
def test_help_text_and_placeholders(path: list[str], command: Any, cli) -> None:  # type: ignore[no-untyped-def]
    assert (command.help or "").strip(), f"janitor {' '.join(path)} has no help text"
    for param in command.params:
        if getattr(param, "opts", None) and param.param_type_name == "option" and not param.hidden:
            assert (param.help or "").strip(), f"janitor {' '.join(path)} {param.opts[0]} has no help"
    proc = cli(*path, "--help")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert not re.search(r"<[a-z\[\], ]+>", text), text  # <str>, <list[str]>, <int>, <float>
    assert not re.search(r"\b(TEXT|INTEGER|FLOAT)\b", text), text
    for line in text.splitlines():
        m = re.match(r"\s+(?:-\w, )?(--[\w-]+) ([A-Z_]+)\b", line)
        if m:
            assert m.group(2) in {"PATH", "NAME", "GLOB", "DURATION", "SIZE", "PCT", "DIR", "N", "RUN_ID", "FORMAT",
                                  "CLASS", "SECONDS", "FILE", "ADDR", "KEY", "REASON"}, line
