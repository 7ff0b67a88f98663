"""janitor vs `find DIR -type f -mtime +7 -delete` on identical trees of 200,000 small files.

    python bench/delete_vs_find.py [--files 200000] [--reps 3]

Each repetition builds two identical trees (half the files 10 days old, half 1 day old),
deletes the old half from one with find and from the other with `janitor run`, checks both
left exactly the same files, and reports wall time, the ratio and janitor's peak RSS. The
order of the two tools alternates between repetitions so page-cache warmth favours neither.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import Timing, count_files, janitor_argv, make_tree, save, timed

POLICY = """\
version: 1
settings:
  state_dir: {state}
  settle: 0s
  max_actions: 1000000
policies:
  - name: old-files
    path: {root}
    older_than: 7d
    action: delete
"""


def one_rep(base: Path, files: int, rep: int) -> tuple[Timing, Timing]:
    now = time.time()
    per_dir = 500
    subdirs = 20
    dirs = max(1, files // (per_dir * subdirs))
    trees = {}
    for tool in ("find", "janitor"):
        root = base / f"{tool}-{rep}"
        make_tree(root, dirs=dirs, subdirs=subdirs, files_per_dir=per_dir, old_share=0.5, now=now)
        trees[tool] = root
    cfg = base / f"policy-{rep}.yaml"
    cfg.write_text(POLICY.format(state=base / f"state-{rep}", root=trees["janitor"]))
    runs = {
        "find": lambda: timed("find -delete", ["find", str(trees["find"]), "-type", "f", "-mtime", "+7", "-delete"]),
        "janitor": lambda: timed("janitor run", janitor_argv("run", "-c", str(cfg))),
    }
    order = ["find", "janitor"] if rep % 2 == 0 else ["janitor", "find"]
    results = {tool: runs[tool]() for tool in order}
    left = {tool: count_files(root) for tool, root in trees.items()}
    assert left["find"] == left["janitor"] == files // 2, left
    for r in results.values():
        assert r.returncode == 0, r
    return results["find"], results["janitor"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to build the trees (default: a temp dir on /tmp)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="janitor-bench-", dir=args.dir))
    try:
        pairs = [one_rep(base, args.files, rep) for rep in range(args.reps)]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    find_t = [f.wall_s for f, _ in pairs]
    jan_t = [j.wall_s for _, j in pairs]
    rss = max(j.peak_rss_mb for _, j in pairs)
    ratio = statistics.median(jan_t) / statistics.median(find_t)
    print(f"files: {args.files} ({args.files // 2} deleted), repetitions: {args.reps}")
    print(f"find -delete : median {statistics.median(find_t):.2f} s  runs {', '.join(f'{t:.2f}' for t in find_t)}")
    print(f"janitor run  : median {statistics.median(jan_t):.2f} s  runs {', '.join(f'{t:.2f}' for t in jan_t)}")
    find_cpu = statistics.median(f.cpu_s for f, _ in pairs)
    jan_cpu = statistics.median(j.cpu_s for _, j in pairs)
    print(f"cpu (user+sys) median: find {find_cpu:.2f} s, janitor {jan_cpu:.2f} s")
    print(f"ratio janitor/find: wall {ratio:.2f}x (target <= 2x), cpu {jan_cpu / find_cpu:.2f}x; "
          f"janitor peak RSS {rss:.0f} MB (target <= 150 MB)")
    path = save("delete_vs_find", {"files": args.files, "find_s": find_t, "janitor_s": jan_t,
                                   "find_cpu_s": [f.cpu_s for f, _ in pairs], "janitor_cpu_s": [j.cpu_s for _, j in pairs],
                                   "ratio_median": ratio, "janitor_peak_rss_mb": rss})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
