"""quota counts only what it could free (red team finding 13): an inode with a hard link
outside the policy is never evicted, so it must not count towards the cap either; else one
link made by an unprivileged account to a big file elsewhere evicts every other user's file."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from attacker import Attacker

OLD = time.time() - 30 * 86400
Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_a_link_to_a_big_file_outside_does_not_push_the_quota_over(
    cli: Cli, attacker: Attacker, hostile_root: Path, sysctl_protection: int
) -> None:
    data = hostile_root / "data"
    data.mkdir()
    shared = data / "victims"
    shared.mkdir()
    victims = {}
    for i in range(5):
        v = shared / f"v{i}.bin"
        body = os.urandom(100 * 1024)
        v.write_bytes(body)
        os.utime(v, (OLD - i, OLD - i))
        victims[v] = body
    udir = attacker.mkdir(data / "u")
    outside = hostile_root / "elsewhere"
    outside.mkdir(mode=0o755)
    big = outside / "big.db"
    big.write_bytes(os.urandom(1 << 20) * 8)  # 8 MiB really allocated, outside the policy path
    if sysctl_protection == 1:
        attacker.give(big, 0o644)  # =1: the attacker links its own file that lives elsewhere
    r = attacker.run(f"import os; os.link({str(big)!r}, {str(udir / 'cache.bin')!r}); print('ok')")
    assert r.returncode == 0, r.stderr
    cfg = hostile_root / "j.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {hostile_root / 'state'}\n  settle: 0s\n"
                   f"policies:\n  - name: q\n    path: {data}\n    action: quota\n    max_size: 2MiB\n"
                   f"    then: delete\n")
    plan = cli("plan", "-c", cfg, "-v")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "hard links outside the policy" in plan.stdout + plan.stderr
    done = cli("run", "-c", cfg)
    assert done.returncode == 0, done.stdout + done.stderr
    for v, body in victims.items():  # 500 KiB of the directory's own: under the 2 MiB cap
        assert v.read_bytes() == body, f"{v.name} was evicted for a file the quota could never free"
    assert (udir / "cache.bin").stat().st_ino == big.stat().st_ino  # the link: never evicted
    assert big.read_bytes()[:16] and big.stat().st_nlink == 2


def test_links_all_inside_the_policy_still_count(cli: Cli, hostile_root: Path) -> None:
    """Both names of an inode matched here: it is counted (once) and evicted whole."""
    data = hostile_root / "data"
    data.mkdir()
    a = data / "a.bin"
    a.write_bytes(os.urandom(3 << 20))
    os.utime(a, (OLD, OLD))
    os.link(a, data / "a-again.bin")
    b = data / "b.bin"
    b.write_bytes(os.urandom(100 * 1024))
    cfg = hostile_root / "j.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {hostile_root / 'state'}\n  settle: 0s\n"
                   f"policies:\n  - name: q\n    path: {data}\n    action: quota\n    max_size: 2MiB\n"
                   f"    then: delete\n")
    done = cli("run", "-c", cfg)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not a.exists() and not (data / "a-again.bin").exists()
    assert b.exists()
