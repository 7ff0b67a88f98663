#!/usr/bin/env python3
"""Archive throughput: `janitor run` (archive, then: delete) vs `rclone move --min-age`.

Both move identical copies of the same files to the same moto S3 server on 127.0.0.1, in
the same run, one after the other, for two shapes: many small files and a few large ones.
Reports objects/s and MB/s (decimal megabytes) of each and the janitor/rclone ratios, and
writes them as JSON to bench/results/.

    python bench/archive_vs_rclone.py                 # 2000 x 64 KiB and 8 x 64 MiB
    python bench/archive_vs_rclone.py --quick         # 200 x 64 KiB and 2 x 16 MiB

rclone is Debian's package (installed with apt-get when missing) and configured only by
environment variables (RCLONE_CONFIG_MOTO_*), so no rclone.conf is read or written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

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
    found = shutil.which("rclone")
    if found:
        return found
    print("rclone missing: apt-get install -y rclone", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "rclone"], check=True, stdout=subprocess.DEVNULL)
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


def copy_tree(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)


def count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


def bucket_stats(endpoint: str, bucket: str) -> tuple[int, int]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    n = size = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            n += 1
            size += item["Size"]
    return n, size


def empty_bucket(endpoint: str, bucket: str) -> None:
    """Drop a contender's objects once counted: moto keeps everything in memory, and a
    server grown fat with earlier runs would slow down whoever runs later."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def create_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)


def run_janitor(work: Path, data: Path, endpoint: str, bucket: str, workers: int) -> float:
    cfg = work / f"janitor-{bucket}.yaml"
    cfg.write_text(
        "version: 1\n"
        f"settings:\n  state_dir: {work / ('state-' + bucket)}\n  settle: 0s\n  archive_workers: {workers}\n"
        f"targets:\n  moto:\n    url: s3://{bucket}/bench\n    endpoint_url: {endpoint}\n"
        "policies:\n"
        f"  - name: bench\n    path: {data}\n    action: archive\n    target: moto\n    then: delete\n"
        "    older_than: 1s\n"
    )
    env = clean_env(PYTHONPATH=str(REPO))
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "janitor", "run", "-c", str(cfg)], env=env,
                       capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"janitor failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return elapsed


def run_rclone(rclone: str, data: Path, endpoint: str, bucket: str, transfers: int | None) -> float:
    env = clean_env(
        RCLONE_CONFIG_MOTO_TYPE="s3",
        RCLONE_CONFIG_MOTO_PROVIDER="Other",
        RCLONE_CONFIG_MOTO_ENDPOINT=endpoint,
        RCLONE_CONFIG_MOTO_ACCESS_KEY_ID="bench",
        RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY="bench",
        RCLONE_CONFIG_MOTO_REGION="us-east-1",
        RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE="true",
        RCLONE_CONFIG=os.devnull,
    )
    cmd = [rclone, "move", "--min-age", "1s", str(data), f"moto:{bucket}/bench"]
    if transfers is not None:
        cmd += ["--transfers", str(transfers)]
    start = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"rclone failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return elapsed


def figures(seconds: float, files: int, nbytes: int) -> dict[str, float]:
    return {
        "seconds": round(seconds, 3),
        "objects_per_s": round(files / seconds, 1),
        "mb_per_s": round(nbytes / 1e6 / seconds, 2),
    }


def bench_shape(name: str, count: int, size: int, *, rclone: str, endpoint: str, work: Path, workers: int,
                rclone_transfers: list[int | None]) -> dict:
    src = work / f"src-{name}"
    make_files(src, count, size)
    nbytes = count * size
    result: dict = {"shape": name, "files": count, "file_bytes": size, "total_bytes": nbytes}

    contenders: list[tuple[str, object]] = [("janitor", None)]
    contenders += [(f"rclone{'' if t is None else f'_transfers{t}'}", t) for t in rclone_transfers]
    for label, transfers in contenders:
        data = work / f"{label}-{name}"
        copy_tree(src, data)
        bucket = f"{label.replace('_', '-')}-{name}".lower()
        create_bucket(endpoint, bucket)
        if label == "janitor":
            seconds = run_janitor(work, data, endpoint, bucket, workers)
        else:
            seconds = run_rclone(rclone, data, endpoint, bucket, transfers)  # type: ignore[arg-type]
        left = count_files(data)
        stored, stored_bytes = bucket_stats(endpoint, bucket)
        if left or stored != count or stored_bytes != nbytes:
            sys.exit(f"{label} {name}: {left} files left locally, {stored} objects / {stored_bytes} bytes stored")
        empty_bucket(endpoint, bucket)
        result[label] = figures(seconds, count, nbytes)
        print(f"  {label:<20} {seconds:8.2f}s  {result[label]['objects_per_s']:8.1f} obj/s  "
              f"{result[label]['mb_per_s']:8.2f} MB/s", flush=True)
        shutil.rmtree(data)
    shutil.rmtree(src)
    base = "rclone" if "rclone" in result else next(k for k in result if k.startswith("rclone"))
    result["ratio_janitor_vs_rclone"] = {
        k: round(result[k]["seconds"] / result["janitor"]["seconds"], 2) for k in result if k.startswith("rclone")
    }
    result["ratio_janitor_vs_rclone"]["baseline"] = base
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=2000, help="number of small files (default 2000)")
    ap.add_argument("--small-size", type=int, default=64 * KiB)
    ap.add_argument("--large", type=int, default=8, help="number of large files (default 8)")
    ap.add_argument("--large-size", type=int, default=64 * MiB)
    ap.add_argument("--workers", type=int, default=8, help="janitor settings.archive_workers (default 8)")
    ap.add_argument("--quick", action="store_true", help="200 x 64 KiB and 2 x 16 MiB")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    if args.quick:
        args.small, args.large, args.large_size = 200, 2, 16 * MiB

    os.environ.update(CREDS)
    rclone = ensure_rclone()
    rclone_version = subprocess.run([rclone, "version"], capture_output=True, text=True).stdout.splitlines()[0]
    server = start_moto_server()
    work = Path(tempfile.mkdtemp(prefix="janitor-bench-"))
    try:
        print(f"moto server {server.endpoint_url}; {rclone_version}; {os.cpu_count()} CPUs; work dir {work}")
        shapes = []
        for name, count, size in (("small", args.small, args.small_size), ("large", args.large, args.large_size)):
            print(f"{name}: {count} x {size // KiB} KiB")
            # rclone as shipped (4 transfers) and with janitor's concurrency
            shapes.append(bench_shape(name, count, size, rclone=rclone, endpoint=server.endpoint_url, work=work,
                                      workers=args.workers, rclone_transfers=[None, args.workers]))
        report = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
            "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()},
            "rclone": rclone_version,
            "janitor_workers": args.workers,
            "shapes": shapes,
        }
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"archive_vs_rclone-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results: {path}")
        for s in shapes:
            print(f"{s['shape']}: janitor/rclone speed ratio {s['ratio_janitor_vs_rclone']}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
