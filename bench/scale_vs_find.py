"""janitor at scale vs find: delete, plan --json vs find -printf, plan to a terminal; catalog bytes/row.

    sudo .venv/bin/python bench/scale_vs_find.py --files 100000 --reps 2
    sudo .venv/bin/python bench/scale_vs_find.py --files 1000000 --reps 2     # needs ~6 GB free in --dir

The tree (issue 13's shape): FILES small files (1-512 bytes) in FILES/100 directories of 100,
ages spread evenly over 0-30 days, so about 77 % are older than 7 days. Every timed command
gets a fresh ext4 filesystem on a loop device (sparse image, made, filled, synced, then
timed), so no run inherits another's directory layout, free-space fragmentation or pending
discards. Order alternates between repetitions. Peak RSS is the kernel's (GNU time, see
common.run_measured), never the program's own account.

Figures, each janitor vs what an operator would otherwise run:

- `janitor run` (`older_than: 7d, action: delete`) vs `find DIR -type f -mmin +10080 -delete`;
  both must leave the same files;
- `janitor plan --json` vs `find DIR -type f -printf '%p %s %T@\\n'` (output to /dev/null);
- `janitor plan` (the terminal table, bounded rows per policy) to a file;
- catalog bytes per journal row after the run (the database with its WAL, over its rows).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import DAY, Timing, ensure_apt, janitor_argv, save, timed

POLICY = """\
version: 1
settings:
  state_dir: {state}
  settle: 0s
  max_actions: 100000000
policies:
  - name: old-files
    path: {root}
    older_than: 7d
    action: delete
"""


@contextmanager
def fresh_ext4(base: Path, name: str, files: int) -> Iterator[Path]:
    """A new ext4 filesystem on a loop device, mounted at base/name; removed afterwards."""
    image = base / f"{name}.img"
    mnt = base / name
    mnt.mkdir()
    size = 64 * 1024 * 1024 + files * 4096 * 13 // 10
    with open(image, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-N", str(files + files // 50 + 10_000), str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        image.unlink(missing_ok=True)
        mnt.rmdir()


def make_tree(root: Path, files: int, now: float, seed: int) -> int:
    """FILES files, 100 a directory, 1-512 bytes, mtimes spread over 30 days; returns how many
    are older than 7 days."""
    rng = random.Random(seed)
    payload = os.urandom(512)
    old = 0
    for i in range(files):
        d = root / f"d{i // 100:05d}"
        if i % 100 == 0:
            d.mkdir()
        fd = os.open(d / f"f{i:07d}.wav", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, payload[: rng.randint(1, 512)])
        os.close(fd)
        age = rng.uniform(0, 30 * DAY)
        if age > 7 * DAY + 600:
            old += 1
        elif age > 7 * DAY - 600:
            age = 7 * DAY - 600  # nobody near the threshold: both tools must agree exactly
        os.utime(d / f"f{i:07d}.wav", (now - age, now - age))
    os.sync()
    return old


def count_files(root: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(root))


def catalog_bytes_per_row(state: Path) -> tuple[int, int]:
    db = state / "catalog.db"
    con = sqlite3.connect(db)
    try:
        rows = int(con.execute("SELECT count(*) FROM journal").fetchone()[0])
    finally:
        con.close()
    size = sum(os.stat(p).st_size for p in state.glob("catalog.db*"))
    return size, rows


def one_rep(base: Path, files: int, rep: int) -> dict[str, object]:
    now = time.time()
    out: dict[str, object] = {}
    # delete: one fresh filesystem per tool
    timings: dict[str, Timing] = {}
    left: dict[str, int] = {}
    catalog: tuple[int, int] = (0, 0)
    order = ["find", "janitor"] if rep % 2 == 0 else ["janitor", "find"]
    for tool in order:
        with fresh_ext4(base, f"{tool}-{rep}", files) as mnt:
            root = mnt / "data"
            root.mkdir()
            old = make_tree(root, files, now, seed=rep)
            if tool == "find":
                timings[tool] = timed("find -delete", ["find", str(root), "-type", "f", "-mmin", "+10080", "-delete"])
            else:
                state = base / f"state-{rep}"
                cfg = base / f"policy-{rep}.yaml"
                cfg.write_text(POLICY.format(state=state, root=root))
                timings[tool] = timed("janitor run", janitor_argv("run", "-c", str(cfg)))
                catalog = catalog_bytes_per_row(state)
                shutil.rmtree(state)
            left[tool] = count_files(root)
            assert left[tool] == files - old, (tool, left[tool], files - old)
            assert timings[tool].returncode == 0, timings[tool]
    out["delete"] = {"find": timings["find"], "janitor": timings["janitor"], "deleted": files - left["find"]}
    out["catalog"] = {"bytes": catalog[0], "rows": catalog[1], "bytes_per_row": catalog[0] / max(1, catalog[1])}
    # plan --json vs find -printf, and the terminal table: read-only, one fresh filesystem
    with fresh_ext4(base, f"plan-{rep}", files) as mnt:
        root = mnt / "data"
        root.mkdir()
        make_tree(root, files, now, seed=rep)
        state = base / f"state-plan-{rep}"
        cfg = base / f"policy-plan-{rep}.yaml"
        cfg.write_text(POLICY.format(state=state, root=root))
        runs = {
            "printf": lambda: timed("find -printf", ["find", str(root), "-type", "f", "-printf", "%p %s %T@\\n"]),
            "plan_json": lambda: timed("janitor plan --json", janitor_argv("plan", "--json", "-c", str(cfg))),
        }
        plan_order = ["printf", "plan_json"] if rep % 2 == 0 else ["plan_json", "printf"]
        out.update({k: runs[k]() for k in plan_order})
        with open(base / "table.txt", "wb") as table:
            out["plan_table"] = timed("janitor plan", janitor_argv("plan", "-c", str(cfg)), stdout=table)
        for k in ("printf", "plan_json", "plan_table"):
            assert out[k].returncode == 0, out[k]  # type: ignore[attr-defined]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--dir", default=None, help="where the sparse images live (default: a temp dir on /tmp)")
    args = ap.parse_args()
    ensure_apt("e2fsprogs", "time")
    base = Path(tempfile.mkdtemp(prefix="janitor-scale-", dir=args.dir))
    try:
        reps = [one_rep(base, args.files, rep) for rep in range(args.reps)]
    finally:
        shutil.rmtree(base, ignore_errors=True)

    def med(key: str, tool: str | None = None, field: str = "wall_s") -> float:
        values = [getattr(r[key][tool] if tool else r[key], field) for r in reps]  # type: ignore[index]
        return statistics.median(values)

    def peak(key: str, tool: str | None = None) -> float:
        return max((r[key][tool] if tool else r[key]).peak_rss_mb for r in reps)  # type: ignore[index]

    find_s, jan_s = med("delete", "find"), med("delete", "janitor")
    printf_s, json_s, table_s = med("printf"), med("plan_json"), med("plan_table")
    per_row = statistics.median(r["catalog"]["bytes_per_row"] for r in reps)  # type: ignore[index]
    deleted = reps[0]["delete"]["deleted"]  # type: ignore[index]
    lines = [
        f"files: {args.files} in {args.files // 100} directories ({deleted} older than 7d), "
        f"repetitions: {args.reps}, a fresh ext4 loop filesystem per timed run",
        f"run delete      : janitor {jan_s:.2f} s vs find -delete {find_s:.2f} s = {jan_s / find_s:.2f}x wall; "
        f"janitor peak RSS {peak('delete', 'janitor'):.0f} MB (find {peak('delete', 'find'):.1f} MB)",
        f"plan --json     : janitor {json_s:.2f} s vs find -printf {printf_s:.2f} s = {json_s / printf_s:.2f}x wall; "
        f"janitor peak RSS {peak('plan_json'):.0f} MB",
        f"plan (terminal) : {table_s:.2f} s, peak RSS {peak('plan_table'):.0f} MB",
        f"catalog         : {per_row:.1f} bytes per journal row (file + WAL over rows)",
    ]
    print("\n".join(lines))
    path = save(f"scale_vs_find_{args.files}", {"files": args.files, "reps": reps, "summary": lines})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
