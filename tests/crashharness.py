"""Fault injection: SIGKILL `janitor run` at random points, run it again, check nothing was lost.

One `Harness` owns a work directory with:

    data/            ext4 (wherever the work directory is)
      soft/          soft-delete, trash on the same filesystem (one atomic rename)
      del/           delete
      arch/          archive to a file:// target, then delete
      logs/app.log   truncate (collapse-range on ext4), numbered lines, rotate: 1000
    fsx/             a tmpfs of its own (root only) holding
      softx/         soft-delete whose trash is on ext4: a verified copy, then unlink
      .janitor-trash a plain *file*, so janitor cannot make a trash on the tmpfs and must copy
    state/           catalog, lock, default trash
    xtrash/          softx's trash_dir (ext4)
    archive/         the file:// target

Each iteration builds a fresh tree of files whose contents are unique and known by hash,
starts `python -m janitor run` in a subprocess, SIGKILLs it (after a seeded random delay
spread over a measured run, or right after the k-th JSON event it logged), appends more
numbered lines to the log (the service kept writing), runs janitor again to completion
(this run reconciles what the killed one left), and checks the invariants in `check()`.
Then `janitor restore --all` must bring every soft-deleted file back byte-identical.

Used by tests/test_crash.py (a bounded number of kills) and bench/crash_harness.py (hundreds).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAY = 86400
SIDECAR = ".janitor.json"
# Names janitor only ever uses for work in progress: none may survive a completed run.
STRAY_RE = re.compile(
    r".*\.janitor-partial|.*\.janitor-cut(\.tmp)?|.*\.janitor-restore|.*\.janitor-tmp|\.janitor-probe-.*|\.janitor-z-.*|\..+\.tmp|\..+\.\d+\.old"
)
LINE = "line %07d the service wrote this\n"
POLICIES = ("soft", "softx", "del", "arch")
# The syscalls that change something: the "syscall" kill mode dies just before one of them.
KILL_SYSCALLS = (
    "rename", "renameat", "renameat2", "unlink", "unlinkat", "rmdir", "mkdir", "mkdirat", "fsync", "fdatasync",
    "fallocate", "ftruncate", "pwrite64", "write", "copy_file_range", "fchmod", "fchown", "utimensat",
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha(path: Path) -> str:
    return sha(path.read_bytes())


@dataclass
class Original:
    policy: str
    path: Path
    digest: str
    old: bool  # selected by the policy (older than 1 day)


@dataclass
class IterationResult:
    index: int
    mode: str  # "time" or "syscall"
    kill_after: str  # "0.412s" or "renameat#17"
    killed: bool  # False: the run finished before the kill landed
    planned_at_kill: int  # journal rows the killed run left 'planned' (kills mid-action)
    reconciled: int
    errors: list[str] = field(default_factory=list)


class Harness:
    def __init__(self, workdir: Path, *, seed: int, files_per_policy: int = 24, log_lines: int = 6000,
                 python: str = sys.executable) -> None:
        self.w = workdir
        self.rng = random.Random(seed)
        self.seed = seed
        self.n = files_per_policy
        self.log_lines = log_lines
        self.python = python
        self.data = workdir / "data"
        self.fsx = workdir / "fsx"
        self.state = workdir / "state"
        self.xtrash = workdir / "xtrash"
        self.archive = workdir / "archive"
        self.cfg = workdir / "janitor.yaml"
        self.mounted = False
        self.typical_s = 1.0
        self.syscall_counts: dict[str, int] = {}
        self.originals: list[Original] = []
        self.next_line = 0

    # -- setup ---------------------------------------------------------------------------

    def __enter__(self) -> Harness:
        self.w.mkdir(parents=True, exist_ok=True)
        self.fsx.mkdir(exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64M,mode=0755", "tmpfs", str(self.fsx)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"cannot mount a tmpfs (needs root): {proc.stderr.strip()}")
        self.mounted = True
        self.cfg.write_text(self._config())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.mounted:
            if subprocess.run(["umount", str(self.fsx)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.fsx)], check=False)
            self.mounted = False

    def _config(self) -> str:
        return f"""\
version: 1
settings:
  state_dir: {self.state}
  settle: 0s
  archive_workers: 2
targets:
  files:
    url: file://{self.archive}
policies:
  - name: soft
    path: {self.data}/soft
    older_than: 1d
    action: soft-delete
  - name: softx
    path: {self.fsx}/softx
    older_than: 1d
    action: soft-delete
    trash_dir: {self.xtrash}
  - name: del
    path: {self.data}/del
    older_than: 1d
    action: delete
  - name: arch
    path: {self.data}/arch
    older_than: 1d
    action: archive
    target: files
  - name: logs
    path: {self.data}/logs
    match: ["app.log"]
    action: truncate
    rotate: 1000
"""

    def reset(self) -> None:
        """A fresh tree: every file with unique content, nested, some old and some new."""
        for d in (self.data, self.state, self.xtrash, self.archive):
            shutil.rmtree(d, ignore_errors=True)
        for entry in os.scandir(self.fsx):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        # a plain file where janitor would make the tmpfs's own trash: forces the copy path
        (self.fsx / ".janitor-trash").write_bytes(b"not a directory\n")
        self.archive.mkdir(parents=True)
        self.originals = []
        now = time.time()
        roots = {"soft": self.data / "soft", "softx": self.fsx / "softx", "del": self.data / "del",
                 "arch": self.data / "arch"}
        for policy, root in roots.items():
            for i in range(self.n):
                rel = f"d{i % 3}/e{i % 2}/f{i:03d}.bin" if i % 4 else f"top{i:03d}.bin"
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                size = self.rng.choice((0, 1, 100, 4096, 20_000, 150_000))
                body = f"{policy}/{rel}/{self.rng.random()}\n".encode() + self.rng.randbytes(size)
                path.write_bytes(body)
                old = i % 5 != 0
                age = 10 * DAY if old else 60.0
                os.utime(path, (now - age, now - age))
                self.originals.append(Original(policy, path, sha(body), old))
        logs = self.data / "logs"
        logs.mkdir(parents=True)
        self.next_line = 0
        self._append_lines(self.log_lines)

    def _append_lines(self, count: int) -> None:
        with open(self.data / "logs" / "app.log", "a") as f:
            f.write("".join(LINE % i for i in range(self.next_line, self.next_line + count)))
        self.next_line += count

    # -- running -------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("JANITOR_CONFIG", "JANITOR_LOG_FORMAT")}
        env["PYTHONPATH"] = str(REPO)
        return env

    def janitor(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.python, "-m", "janitor", *args], capture_output=True, text=True,
                              env=self._env(), timeout=timeout, cwd=REPO)

    def calibrate(self) -> None:
        """Measure uninterrupted runs: the duration, and how often each changing syscall is made."""
        self.reset()
        started = time.monotonic()
        proc = self.janitor("run", "-c", str(self.cfg))
        self.typical_s = time.monotonic() - started
        if proc.returncode != 0:
            raise RuntimeError(f"calibration run failed ({proc.returncode}): {proc.stderr[-2000:]}")
        self.syscall_counts = {}
        if shutil.which("strace") is None:
            return
        self.reset()
        summary = self.w / "strace-summary.txt"
        subprocess.run(["strace", "-f", "-c", "-o", str(summary), "-e", f"trace={','.join(KILL_SYSCALLS)}",
                        self.python, "-m", "janitor", "run", "-c", str(self.cfg)],
                       capture_output=True, env=self._env(), cwd=REPO, timeout=300, check=True)
        for line in summary.read_text().splitlines():
            fields = line.split()
            if fields and fields[-1] in KILL_SYSCALLS and fields[-2].isdigit():
                # "% time seconds usecs/call calls [errors] syscall"
                calls = int(fields[3])
                self.syscall_counts[fields[-1]] = calls

    def _killed_run(self, mode: str) -> tuple[bool, str]:
        argv = [self.python, "-m", "janitor", "run", "-c", str(self.cfg), "--log-format", "json"]
        if mode == "time":
            delay = self.rng.uniform(0.0, self.typical_s)
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env=self._env(), cwd=REPO)
            try:
                proc.wait(timeout=delay)
                return False, f"{delay:.3f}s"
            except subprocess.TimeoutExpired:
                pass
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True, f"{delay:.3f}s"
        # mode "syscall": SIGKILL on entering the k-th call of one changing syscall (strace
        # counts per thread), i.e. just before a rename, unlink, fsync, fallocate, write...
        names = sorted(self.syscall_counts)
        weights = [self.syscall_counts[n] for n in names]
        name = self.rng.choices(names, weights)[0]
        k = self.rng.randint(1, self.syscall_counts[name])
        proc = subprocess.run(
            ["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={name}",
             "-e", f"inject={name}:signal=SIGKILL:when={k}", *argv],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self._env(), cwd=REPO, timeout=300,
        )
        return proc.returncode != 0, f"{name}#{k}"

    def iteration(self, index: int, mode: str, *, restore: bool = True) -> IterationResult:
        self.reset()
        killed, when = self._killed_run(mode)
        planned = self._count("SELECT count(*) FROM journal WHERE state='planned'")
        self._append_lines(self.rng.randint(1, 3000))  # the service kept writing meanwhile
        result = IterationResult(index, mode, when, killed, planned, 0)
        proc = self.janitor("run", "-c", str(self.cfg), "--json")
        if proc.returncode != 0:
            result.errors.append(f"second run exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
        else:
            with contextlib.suppress(ValueError, AttributeError):
                result.reconciled = json.loads(proc.stdout).get("reconciled", 0) or 0
        result.errors += self.check()
        if restore and not result.errors:
            result.errors += self.check_restore()
        return result

    # -- invariants ----------------------------------------------------------------------

    def _count(self, sql: str) -> int:
        db = self.state / "catalog.db"
        if not db.exists():
            return 0
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return int(con.execute(sql).fetchone()[0])
        except sqlite3.OperationalError:
            return 0  # killed before the schema was written
        finally:
            con.close()

    def _rows(self) -> list[dict[str, object]]:
        con = sqlite3.connect(f"file:{self.state / 'catalog.db'}?mode=ro", uri=True, timeout=10)
        con.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in con.execute("SELECT * FROM journal ORDER BY id")]
        finally:
            con.close()

    def _all_files(self) -> dict[str, list[Path]]:
        """digest -> every regular file holding those bytes, anywhere janitor may put a file."""
        found: dict[str, list[Path]] = {}
        for top in (self.data, self.fsx, self.state, self.xtrash, self.archive):
            for dirpath, _, names in os.walk(top):
                for name in names:
                    p = Path(dirpath) / name
                    if p.is_symlink() or not p.is_file() or name.endswith(SIDECAR):
                        continue
                    found.setdefault(file_sha(p), []).append(p)
        return found

    def strays(self) -> list[Path]:
        out = []
        for top in (self.data, self.fsx, self.state, self.xtrash, self.archive):
            for dirpath, _, names in os.walk(top):
                out += [Path(dirpath) / n for n in names if STRAY_RE.fullmatch(n)]
        return out

    def _verified_object(self, path: Path, digest: str) -> bool:
        try:
            meta = json.loads((path.parent / (path.name + SIDECAR)).read_text())
        except (OSError, ValueError):
            return False
        return meta.get("sha256") == digest and meta.get("size") == path.stat().st_size

    def check(self) -> list[str]:
        errors: list[str] = []
        where = self._all_files()
        rows = self._rows()
        planned = [r for r in rows if r["state"] == "planned"]
        if planned:
            errors.append(f"{len(planned)} journal rows left 'planned'")
        for s in self.strays():
            errors.append(f"stray work file {s}")
        done_trash = {os.fsdecode(r["trash_path"]): r for r in rows  # type: ignore[arg-type]
                      if r["state"] == "done" and r["trash_path"] and r["restored_at"] is None}
        for trash_path, r in done_trash.items():
            if not os.path.lexists(trash_path):
                errors.append(f"done row {r['id']}: trash copy {trash_path} missing")
            if os.path.lexists(os.fsdecode(r["path"])):  # type: ignore[arg-type]
                errors.append(f"done row {r['id']}: {os.fsdecode(r['path'])} is both in place and in the trash")  # type: ignore[arg-type]
        for o in self.originals:
            places = where.get(o.digest, [])
            if o.policy == "del":
                if places and places != [o.path]:
                    errors.append(f"{o.path}: deleted file's bytes found at {places}")
                if o.old and places:
                    errors.append(f"{o.path}: old file not deleted by the completed run")
                if not o.old and places != [o.path]:
                    errors.append(f"{o.path}: new file gone")
                continue
            if len(places) != 1:
                errors.append(f"{o.path}: content found {len(places)} times: {places}")
                continue
            place = places[0]
            if place == o.path:
                if o.old:
                    errors.append(f"{o.path}: old file still in place after the completed run")
                continue
            if not o.old:
                errors.append(f"{o.path}: new file moved to {place}")
            if o.policy == "arch":
                if not self._verified_object(place, o.digest) or not str(place).startswith(str(self.archive)):
                    errors.append(f"{o.path}: only copy is {place}, not a verified archive object")
            elif str(place) not in done_trash:
                errors.append(f"{o.path}: only copy is {place}, not a trash location recorded as done")
        errors += self.check_log()
        return errors

    def check_log(self) -> list[str]:
        logs = self.data / "logs"
        copies = []
        for entry in os.listdir(logs):
            m = re.fullmatch(r"app\.log\.(\d+)", entry)
            if m:
                copies.append((int(m.group(1)), entry))
        parts = [(logs / name).read_bytes() for _, name in sorted(copies, reverse=True)]
        parts.append((logs / "app.log").read_bytes())
        text = b"".join(parts).decode()
        expected = "".join(LINE % i for i in range(self.next_line))
        if text == expected:
            return []
        lines = text.splitlines(keepends=True)
        counts = Counter(lines)
        dup = sum(1 for c in counts.values() if c > 1)
        missing = sum(1 for i in range(self.next_line) if (LINE % i) not in counts)
        return [f"log: {len(copies)} copies + live give {len(lines)} lines for {self.next_line} written "
                f"({missing} missing, {dup} duplicated)"]

    def check_restore(self) -> list[str]:
        proc = self.janitor("restore", "--all", "-c", str(self.cfg))
        errors = []
        if proc.returncode != 0:
            errors.append(f"restore --all exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
        for o in self.originals:
            if o.policy in ("soft", "softx") and (not o.path.is_file() or file_sha(o.path) != o.digest):
                errors.append(f"{o.path}: not restored byte-identical")
        for trash in (self.state / "trash", self.xtrash):
            left = [p for p in trash.rglob("*") if p.is_file()] if trash.exists() else []
            if left:
                errors.append(f"{len(left)} files left in {trash} after restore --all")
        return errors


def run_harness(workdir: Path, *, seed: int, kills: int, deadline_s: float | None = None,
                restore_every: int = 1, files_per_policy: int = 24,
                progress: bool = False) -> tuple[list[IterationResult], Harness]:
    """Calibrate, then `kills` iterations alternating kill modes (stops early at deadline_s)."""
    started = time.monotonic()
    results: list[IterationResult] = []
    with Harness(workdir, seed=seed, files_per_policy=files_per_policy) as h:
        h.calibrate()
        for i in range(kills):
            if deadline_s is not None and time.monotonic() - started > deadline_s:
                break
            mode = "time" if i % 3 == 0 or not h.syscall_counts else "syscall"
            r = h.iteration(i, mode, restore=(i % restore_every == 0))
            results.append(r)
            if progress:
                status = "ok" if not r.errors else "FAIL " + "; ".join(r.errors[:3])
                print(f"[{i:4d}] {mode:5s} {r.kill_after:>9s} killed={r.killed!s:5s} "
                      f"planned={r.planned_at_kill:3d} reconciled={r.reconciled:3d} {status}", flush=True)
    return results, h
