"""The attacker harness itself: the attack code really runs without root's powers."""

from __future__ import annotations

from pathlib import Path

from attacker import Attacker


def test_attacker_runs_unprivileged_and_cannot_touch_roots_files(attacker: Attacker, hostile_root: Path,
                                                                 sysctl_protection: int) -> None:
    secret = hostile_root / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    own = attacker.mkdir(hostile_root / "mine")
    proc = attacker.run(f"""
        import os
        print(os.getuid(), os.getgid(), os.getgroups())
        try:
            open({str(secret)!r}).read()
            print("read")
        except PermissionError:
            print("denied")
        open({str(own / 'x')!r}, 'w').write('x')
    """)
    assert proc.returncode == 0, proc.stderr
    ids, verdict = proc.stdout.split("\n")[:2]
    assert ids == f"{attacker.uid} {attacker.gid} []"
    assert verdict == "denied"
    assert (own / "x").stat().st_uid == attacker.uid
    assert Path("/proc/sys/fs/protected_hardlinks").read_text().strip() == str(sysctl_protection)


def test_background_attack_is_bounded_and_awaited(attacker: Attacker, hostile_root: Path) -> None:
    own = attacker.mkdir(hostile_root / "race")
    proc = attacker.start(f"""
        import os
        n = 0
        while time.monotonic() < DEADLINE:
            with open({str(own / 'f')!r}, 'w') as f:
                f.write(str(n))
            if n == 0:
                print("ready", flush=True)
            n += 1
    """, seconds=0.5)
    attacker.wait_ready(proc)
    attacker.finish(proc)
    assert proc.returncode == 0
    assert (own / "f").stat().st_uid == attacker.uid
