"""`janitor demo`: a guided tour on a realistic sandbox, with no server and no root.

It builds what the tool was born for: an outputs directory of rendered videos of many
ages, temporary ZIPs left by broken downloads, and a log that a live process is writing;
writes a policy for it; shows the plan, runs it, shows what changed and how to restore.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from .errors import EXIT_OK, UsageError

DAY = 86400

POLICY = """\
version: 1
settings:
  state_dir: {root}/state        # catalog, lock and trash live here
  settle: 60s                    # anything modified in the last minute is left alone

policies:
  - name: old-renders
    path: {root}/outputs
    match: ["**/*.mp4"]
    exclude: ["keep/**"]         # hand-picked showreels stay forever
    older_than: 7d
    keep_newest: 3               # never empty the gallery completely
    action: soft-delete          # restorable with `janitor restore`
    retain: 14d                  # purged from the trash after two weeks

  - name: broken-downloads
    path: {root}/tmp
    match: ["videos_*.zip"]
    older_than: 1h
    age_by: atime                # nobody has read it for an hour
    action: delete

  - name: old-logs
    path: {root}/logs
    match: ["*.log"]
    older_than: 7d
    action: delete

  - name: live-render-log
    path: {root}/logs
    match: ["render.log"]
    larger_than: 1MiB              # the trigger
    action: truncate               # the service keeps writing; not one line is lost
    rotate: 3
    compress: gzip
"""

# A service: it keeps app.log open for writing but has not written to it for a while, and
# appends a line to render.log every few milliseconds, as a render server does.
WRITER = """
import select, sys, time
quiet = open(sys.argv[1], "a", buffering=1)
render = open(sys.argv[2], "a", buffering=1)
print("ready", flush=True)
n = 0
while not select.select([sys.stdin], [], [], 0.005)[0]:
    n += 1
    render.write(f"{time.strftime('%H:%M:%S')} INFO frame {n} rendered\\n")
print(n, flush=True)
"""


def build_sandbox(root: Path, now: float) -> None:
    rng = random.Random(42)
    outputs = root / "outputs"
    for i in range(24):
        age = i * 1.3 * DAY + rng.uniform(0, 3600)
        day = time.strftime("%Y-%m-%d", time.localtime(now - age))
        path = outputs / day / f"render_{1000 + i}.mp4"
        _write(path, rng.randint(40, 400) * 1024, now - age, rng)
    _write(outputs / "keep" / "showreel.mp4", 300 * 1024, now - 60 * DAY, rng)
    (outputs / "latest.mp4").symlink_to("/etc/hostname")  # a link out of the tree: never followed
    tmp = root / "tmp"
    for name, hours in (("videos_a1.zip", 0.2), ("videos_b2.zip", 2), ("videos_c3.zip", 5), ("videos_d4.zip", 30)):
        _write(tmp / name, rng.randint(100, 900) * 1024, now - hours * 3600, rng)
    logs = root / "logs"
    _write(logs / "debug-2026-10-01.log", 512 * 1024, now - 50 * DAY, rng, text=True)
    _write(logs / "debug-2026-11-01.log", 256 * 1024, now - 20 * DAY, rng, text=True)
    _write(logs / "app.log", 64 * 1024, now - 30 * DAY, rng, text=True)
    # 3 MiB + 48 KiB puts the plan's total mid-way between two shown values (9.40 MiB): the
    # lines the live writer adds before the cut (a few KiB) cannot make the run's total
    # read differently from the plan's
    _write(logs / "render.log", 3 * 1024 * 1024 + 48 * 1024, now, rng, text=True)


def _write(path: Path, size: int, mtime: float, rng: random.Random, text: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (b"INFO something happened\n" * (size // 24 + 1))[:size] if text else rng.randbytes(size)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def _summary(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for sub in ("outputs", "tmp", "logs"):
        files = [p for p in (root / sub).rglob("*") if p.is_file() and not p.is_symlink()]
        out[sub] = (len(files), sum(p.stat().st_size for p in files))
    return out


# What a sandbox consists of: the demo creates these names in the sandbox directory and,
# when it is done (or when a kept sandbox is built again), removes these and nothing else.
MARKER = ".janitor-demo"
SANDBOX_NAMES = (MARKER, "janitor.yaml", "outputs", "tmp", "logs", "state")


def prepare_sandbox(directory: str | None) -> tuple[Path, bool]:
    """The sandbox directory, and whether the demo created it (then it may remove it too).

    `--dir D` must name a new or empty directory, or a sandbox an earlier `demo --keep` left
    (it holds the marker file and nothing but the demo's own names), which is built anew. A
    directory holding anything else is refused: the demo never removes what it did not create.
    """
    if directory is None:
        return Path(tempfile.mkdtemp(prefix="janitor-demo-")).resolve(), True
    root = Path(directory).absolute()
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise UsageError(f"--dir {directory}: not a directory")
    if not root.exists():
        root.mkdir(parents=True)
        return root.resolve(), True
    names = set(os.listdir(root))
    if names and MARKER not in names:
        raise UsageError(f"--dir {directory}: the directory is not empty; give a new or empty directory "
                         "(the demo never removes files it did not create)")
    foreign = names - set(SANDBOX_NAMES)
    if foreign:
        raise UsageError(f"--dir {directory}: holds an earlier demo sandbox and also "
                         f"{', '.join(sorted(foreign))}; give a new or empty directory")
    remove_sandbox(root, created=False)
    return root.resolve(), False


def remove_sandbox(root: Path, *, created: bool) -> None:
    """Remove the demo's own names in root (never following a symlink), and root itself when
    the demo created it and nothing else is left there."""
    for name in SANDBOX_NAMES:
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
    if created:
        try:
            root.rmdir()  # only if empty: something added meanwhile stays, with its directory
        except OSError:
            pass


def run_demo(directory: str | None = None, *, keep: bool = False) -> int:
    from rich.syntax import Syntax

    from . import plugins
    from .config import load_config
    from .events import EventLog
    from .planner import build_plan
    from .render import console, heading, render_plan, render_run, render_trash
    from .runner import locked_state, run_policies
    from .trashops import restore_entries, select_trash
    from .units import format_size

    plugins.load()  # the actions named in policy files
    out = console()
    root, created = prepare_sandbox(directory)
    (root / MARKER).write_text("a sandbox of `janitor demo`: `janitor demo --dir` may remove it and build it again\n")
    now = time.time()
    try:
        build_sandbox(root, now)
    except BaseException:
        remove_sandbox(root, created=created)
        raise
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root / "logs" / "app.log"),
                               str(root / "logs" / "render.log")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None
        writer.stdout.readline()  # it has the log open before we look
        os.utime(root / "logs" / "app.log", (now - 30 * DAY, now - 30 * DAY))
        config_path = root / "janitor.yaml"
        config_path.write_text(POLICY.format(root=root))

        heading(out, "1. A service's disk after a few weeks")
        out.print(f"sandbox: {root}")
        before = _summary(root)
        for sub, (n, size) in before.items():
            out.print(f"  {sub + '/':10} {n:3d} files  {format_size(size):>10}")
        out.print(f"  logs/app.log is old but still open for writing by a running service (pid {writer.pid})")
        out.print("  logs/render.log grows while that service appends to it")

        heading(out, "2. The policy")
        out.print(Syntax(config_path.read_text(), "yaml", theme="ansi_dark", background_color="default"))

        heading(out, f"3. janitor plan -c {config_path}")
        config = load_config(config_path)
        render_plan(build_plan(config, config.policies), out)

        heading(out, f"4. janitor run -c {config_path}")
        report = run_policies(config, config.policies, EventLog())
        render_run(report, out)

        heading(out, "5. What changed")
        after = _summary(root)
        for sub in before:
            (n0, s0), (n1, s1) = before[sub], after[sub]
            out.print(f"  {sub + '/':10} {n0:3d} -> {n1:3d} files  {format_size(s0):>10} -> {format_size(s1):>10}")
        out.print("  logs/app.log was skipped: a process has it open for writing")
        render = root / "logs" / "render.log"
        rotated = sorted(p.name for p in render.parent.glob("render.log.*"))
        out.print(f"  logs/render.log was cut while being written: {format_size(render.stat().st_size)} live, "
                  f"old lines in {', '.join(rotated) or 'nothing kept'}")

        heading(out, f"6. janitor trash list -c {config_path}")
        with locked_state(config) as catalog:
            trashed = select_trash(catalog)
            render_trash(trashed, out)
            if trashed:
                victim = max(trashed, key=lambda e: e.mtime)
                heading(out, f"7. janitor restore -c {config_path} '{victim.path}'")
                restored = restore_entries(catalog, [victim], EventLog())
                for e in restored.done:
                    mtime = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.stat(e.path).st_mtime))
                    out.print(f"  back in place: {e.path} (mtime {mtime}, as before)")

        heading(out, "Try it yourself")
        if keep:
            out.print(f"the sandbox stays in {root}; try:")
            out.print(textwrap.indent(textwrap.dedent(f"""\
                janitor plan -c {config_path}
                janitor run -c {config_path} --json
                janitor trash list -c {config_path}
                janitor restore -c {config_path} --all
                janitor report -c {config_path}"""), "  "))
        else:
            out.print("this sandbox is removed now; to keep one and try the commands yourself:")
            out.print(textwrap.indent(textwrap.dedent("""\
                janitor demo --dir ./janitor-demo --keep
                janitor plan -c ./janitor-demo/janitor.yaml
                janitor trash list -c ./janitor-demo/janitor.yaml
                janitor restore -c ./janitor-demo/janitor.yaml --all"""), "  "))
        if Path("policies").is_dir() and any(Path("policies").glob("*.yaml")):
            out.print("  janitor validate -c policies/     # the ready policies in this directory")
    finally:
        if writer.stdin is not None:
            writer.stdin.close()
        writer.wait(timeout=10)
        if not keep:
            remove_sandbox(root, created=created)
    return EXIT_OK
