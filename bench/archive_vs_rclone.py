#!/usr/bin/env python3
"""Archive throughput: `janitor run` (archive, then: delete) vs `rclone move --min-age`.

Both move identical copies of the same files to a moto S3 server on 127.0.0.1 for two
shapes, many small files and a few large ones, and the figures are objects/s and MB/s
(decimal megabytes), CPU seconds and peak RSS of each, and the janitor/rclone ratios. The
JSON goes to bench/results/.

Fair by construction, because moto is a single Python process that slows down as it ages:
- every timed run gets a fresh moto server, started before the clock starts;
- dirty pages are synced before each run (bench.common.timed);
- the order of the contenders alternates between repetitions, and the figures are the
  medians of --reps repetitions;
- janitor's bytecode is compiled first, as `pip install` does (some environments set
  PYTHONDONTWRITEBYTECODE, which would make janitor recompile its sources on every run).

    python bench/archive_vs_rclone.py                 # 2000 x 64 KiB and 8 x 64 MiB, 3 reps
    python bench/archive_vs_rclone.py --quick         # 200 x 64 KiB and 2 x 16 MiB, 1 rep

rclone is Debian's package (installed with apt-get when missing) and configured only by
environment variables (RCLONE_CONFIG_MOTO_*), so no rclone.conf is read or written.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from common import Timing, count_files, ensure_apt, janitor_argv, save, timed  # noqa: E402
from s3server import start_moto_server  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
AGE = 2 * 86400

CREDS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for both tools: fake credentials, and no AWS_CA_BUNDLE (the endpoint
    is plain http on loopback; rclone's SDK refuses a custom bundle with its own transport)."""
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_CA_BUNDLE", "AWS_PROFILE")}
    env.update(CREDS)
    env.update(extra)
    return env


def ensure_rclone() -> str:
    if not shutil.which("rclone"):
        ensure_apt("rclone")
    found = shutil.which("rclone")
    if not found:
        sys.exit("rclone still not found after apt-get install")
    return found


def make_files(root: Path, count: int, size: int) -> None:
    """`count` files of `size` random bytes in a few subdirectories, all two days old."""
    when = time.time() - AGE
    block = os.urandom(size)
    for i in range(count):
        d = root / f"d{i % 8}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"f{i:05}.bin"
        # distinct content per file (no dedup anywhere can flatter either tool)
        p.write_bytes(i.to_bytes(8, "little") + block[8:])
        os.utime(p, (when, when))


def bucket_stats(endpoint: str, bucket: str) -> tuple[int, int]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    n = size = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            n += 1
            size += item["Size"]
    return n, size


def janitor_run(work: Path, data: Path, endpoint: str, bucket: str, workers: int) -> list[str]:
    cfg = work / "janitor.yaml"
    cfg.write_text(
        "version: 1\n"
        f"settings:\n  state_dir: {work / 'state'}\n  settle: 0s\n  archive_workers: {workers}\n"
        f"targets:\n  moto:\n    url: s3://{bucket}/bench\n    endpoint_url: {endpoint}\n"
        "policies:\n"
        f"  - name: bench\n    path: {data}\n    action: archive\n    target: moto\n    then: delete\n"
        "    older_than: 1s\n"
    )
    return janitor_argv("run", "-c", str(cfg))


def rclone_move(rclone: str, data: Path, bucket: str, transfers: int | None) -> list[str]:
    argv = [rclone, "move", "--min-age", "1s", str(data), f"moto:{bucket}/bench"]
    return argv + (["--transfers", str(transfers)] if transfers is not None else [])


def rclone_env(endpoint: str) -> dict[str, str]:
    return clean_env(
        RCLONE_CONFIG_MOTO_TYPE="s3",
        RCLONE_CONFIG_MOTO_PROVIDER="Other",
        RCLONE_CONFIG_MOTO_ENDPOINT=endpoint,
        RCLONE_CONFIG_MOTO_ACCESS_KEY_ID="bench",
        RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY="bench",
        RCLONE_CONFIG_MOTO_REGION="us-east-1",
        RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE="true",
        RCLONE_CONFIG=os.devnull,
    )


def one_run(label: str, src: Path, count: int, nbytes: int, *, rclone: str, work: Path, workers: int) -> Timing:
    """Copy the shape, start a fresh server, time one contender moving it, check the result."""
    data = work / f"{label}-data"
    shutil.rmtree(data, ignore_errors=True)
    subprocess.run(["cp", "-a", str(src), str(data)], check=True)
    server = start_moto_server()
    bucket = "bench-" + label.replace("_", "-")
    try:
        import boto3

        boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1").create_bucket(Bucket=bucket)
        if label.startswith("janitor"):
            state = work / "state"
            shutil.rmtree(state, ignore_errors=True)
            argv, env = janitor_run(work, data, server.endpoint_url, bucket, workers), clean_env()
        else:
            transfers = int(label.rpartition("transfers")[2]) if "transfers" in label else None
            argv, env = rclone_move(rclone, data, bucket, transfers), rclone_env(server.endpoint_url)
        with open(work / f"{label}.log", "w+") as log:
            timing = timed(label, argv, env=env, stderr=log)
            if timing.returncode != 0:
                log.seek(0)
                sys.exit(f"{label} failed with exit code {timing.returncode}:\n{log.read()[-3000:]}")
        left = count_files(data)
        stored, stored_bytes = bucket_stats(server.endpoint_url, bucket)
        if left or stored != count or stored_bytes != nbytes:
            sys.exit(f"{label}: {left} files left locally, {stored} objects / {stored_bytes} bytes stored")
        return timing
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def bench_shape(name: str, count: int, size: int, *, rclone: str, work: Path, workers: int, reps: int) -> dict:
    src = work / f"src-{name}"
    make_files(src, count, size)
    nbytes = count * size
    labels = ["janitor", "rclone", f"rclone_transfers{workers}"]
    runs: dict[str, list[Timing]] = {label: [] for label in labels}
    for rep in range(reps):
        order = labels if rep % 2 == 0 else labels[::-1]
        for label in order:
            t = one_run(label, src, count, nbytes, rclone=rclone, work=work, workers=workers)
            runs[label].append(t)
            print(f"  rep {rep + 1} {label:<20} {t.wall_s:7.2f} s  {count / t.wall_s:8.1f} obj/s  "
                  f"{nbytes / 1e6 / t.wall_s:7.1f} MB/s  cpu {t.cpu_s:5.2f} s  rss {t.peak_rss_mb:5.0f} MB",
                  flush=True)
    shutil.rmtree(src)
    result: dict = {"shape": name, "files": count, "file_bytes": size, "total_bytes": nbytes, "reps": reps}
    for label, timings in runs.items():
        wall = statistics.median(t.wall_s for t in timings)
        result[label] = {
            "seconds_median": round(wall, 3),
            "seconds_all": [round(t.wall_s, 3) for t in timings],
            "objects_per_s": round(count / wall, 1),
            "mb_per_s": round(nbytes / 1e6 / wall, 2),
            "cpu_s_median": round(statistics.median(t.cpu_s for t in timings), 3),
            "peak_rss_mb_max": round(max(t.peak_rss_mb for t in timings), 1),
        }
    # > 1 means janitor moved the shape faster than that rclone configuration
    result["throughput_ratio_janitor_vs"] = {
        label: round(result[label]["seconds_median"] / result["janitor"]["seconds_median"], 2)
        for label in labels[1:]
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=2000, help="number of small files (default 2000)")
    ap.add_argument("--small-size", type=int, default=64 * KiB)
    ap.add_argument("--large", type=int, default=8, help="number of large files (default 8)")
    ap.add_argument("--large-size", type=int, default=64 * MiB)
    ap.add_argument("--workers", type=int, default=8, help="janitor settings.archive_workers (default 8)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions; figures are medians (default 3)")
    ap.add_argument("--shapes", default="small,large", help="which shapes to run (default small,large)")
    ap.add_argument("--quick", action="store_true", help="200 x 64 KiB and 2 x 16 MiB, one repetition")
    args = ap.parse_args()
    if args.quick:
        args.small, args.large, args.large_size, args.reps = 200, 2, 16 * MiB, 1

    os.environ.update(CREDS)
    rclone = ensure_rclone()
    rclone_version = subprocess.run([rclone, "version"], capture_output=True, text=True).stdout.splitlines()[0]
    compileall.compile_dir(str(REPO / "janitor"), quiet=1)
    work = Path(tempfile.mkdtemp(prefix="janitor-bench-"))
    try:
        print(f"{rclone_version}; {os.cpu_count()} CPUs; {args.reps} reps; work dir {work}")
        shapes = []
        for name, count, size in (("small", args.small, args.small_size), ("large", args.large, args.large_size)):
            if name not in args.shapes.split(","):
                continue
            print(f"{name}: {count} x {size // KiB} KiB")
            # rclone as shipped (4 transfers) and with janitor's concurrency
            shapes.append(bench_shape(name, count, size, rclone=rclone, work=work, workers=args.workers,
                                      reps=args.reps))
        path = save(f"archive_vs_rclone-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}", {
            "command": " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
            "rclone": rclone_version,
            "janitor_workers": args.workers,
            "shapes": shapes,
        })
        print(f"results: {path}")
        for s in shapes:
            med = {k: s[k]["seconds_median"] for k in s if k.startswith(("janitor", "rclone"))}
            print(f"{s['shape']}: median seconds {med}; janitor throughput ratio {s['throughput_ratio_janitor_vs']}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
