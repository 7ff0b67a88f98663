"""A local user who can write into the policy paths attacks a root janitor; nothing outside leaks.

The attacker's moves are the classic ones against tmp cleaners and log rotators: swap a
directory for a symlink to somewhere else while janitor works in it (tmpreaper
CVE-2019-3461, systemd-tmpfiles CVE-2018-6954), swap a file for a symlink between plan and
run, hard-link a sensitive file into the policy path (the logrotate family of bugs), plant
a symlinked or group-writable state or trash directory, and feed restore hostile rows.

A canary tree outside every policy path holds files with the same names as the attacked
ones, old and large enough to be selected; after every attack its hashes must be unchanged
and none of its contents may show up in a trash or an archive.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fsutil import janitor_cmd

DAY = 86400
ATTACK_SECONDS = float(os.environ.get("JANITOR_ATTACK_SECONDS", "6"))

# The attacker: swap DIR for a symlink to TARGET and back, as fast as it can, until STOP
# exists; prints how many swaps it made.
SWAPPER = textwrap.dedent("""
    import os, sys
    d, target, stop = sys.argv[1:4]
    real = d + ".real"
    n = 0
    while not os.path.exists(stop):
        try:
            os.rename(d, real)
            os.symlink(target, d)
            os.unlink(d)
            os.rename(real, d)
            n += 1
        except OSError:
            pass
    print(n, flush=True)
""")


def digest_tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def all_digests(*roots: Path) -> set[str]:
    found = set()
    for root in roots:
        if root.exists():
            found.update(digest_tree(root).values())
    return found


def make_files(directory: Path, names: list[str], tag: str, size: int = 9000, age: float = 10 * DAY) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for name in names:
        p = directory / name
        # log-like lines: truncate can cut them, every file's bytes are unique
        p.write_bytes("".join(f"{tag} {name} line {i}\n" for i in range(size // 30)).encode())
        os.utime(p, (now - age, now - age))


POLICY = {
    "delete": "action: delete\n    older_than: 1d",
    "soft-delete": "action: soft-delete\n    older_than: 1d",
    "archive": "action: archive\n    target: store\n    older_than: 1d",
    "truncate": "action: truncate\n    match: ['**/*.log']\n    rotate: 2",
}


@pytest.mark.parametrize("action", list(POLICY))
def test_directory_swapped_for_symlink_mid_run_never_escapes(tmp_path: Path, action: str,
                                                             record_property) -> None:  # type: ignore[no-untyped-def]
    data, outside, state, store = (tmp_path / n for n in ("data", "outside", "state", "store"))
    store.mkdir()
    names = [f"f{i:03d}.log" for i in range(60)]
    make_files(outside, names, "CANARY")
    canary = digest_tree(outside)
    cfg = tmp_path / "janitor.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {state}\n  settle: 0s\n"
                   f"targets:\n  store:\n    url: file://{store}\n"
                   f"policies:\n  - name: p\n    path: {data}\n    {POLICY[action]}\n")
    deadline = time.monotonic() + ATTACK_SECONDS
    swaps = runs = acted = 0
    while time.monotonic() < deadline or runs < 2:
        stop = tmp_path / "stop"
        stop.unlink(missing_ok=True)
        for leftover in (data / "sub", data / "sub.real"):
            if leftover.is_symlink():
                leftover.unlink()
        if (data / "sub.real").is_dir() and not (data / "sub").exists():
            (data / "sub.real").rename(data / "sub")
        make_files(data / "sub", names, f"RUN{runs}")
        planted = digest_tree(data / "sub")
        attacker = subprocess.Popen([sys.executable, "-c", SWAPPER, str(data / "sub"), str(outside), str(stop)],
                                    stdout=subprocess.PIPE, text=True)
        try:
            proc = janitor_cmd("run", "-c", str(cfg), "--json", timeout=120)
        finally:
            stop.touch()
            out, _ = attacker.communicate(timeout=30)
        assert proc.returncode in (0, 1), proc.stderr
        swaps += int(out.strip() or 0)
        runs += 1
        if (data / "sub").is_symlink():
            (data / "sub").unlink()
        if (data / "sub.real").is_dir():
            (data / "sub.real").rename(data / "sub")
        now = digest_tree(data / "sub")
        acted += sum(1 for name in names if now.get(name) != planted[name])  # janitor's work
        assert digest_tree(outside) == canary, f"run {runs}: a file outside the policy path changed"
    record_property("runs", runs)
    record_property("swaps", swaps)
    print(f"{action}: {runs} runs, {swaps} directory swaps by the attacker, {acted} files acted on, 0 escapes")
    # nothing from outside was moved into the trash or uploaded
    leaked = set(canary.values()) & all_digests(state, store, data)
    assert not leaked, f"{len(leaked)} canary files copied into the trash, the archive or the policy path"
    assert digest_tree(outside) == canary
    assert swaps > runs  # the attacker really raced every run
    assert acted > 0  # and janitor still did its work between the swaps


# -- exact timing: the swap lands between janitor's last check and its action -----------------


def _config(tmp_path: Path, data: Path, policy: str) -> Path:
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    cfg = tmp_path / "janitor.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {tmp_path / 'state'}\n  settle: 0s\n"
                   f"targets:\n  store:\n    url: file://{store}\n"
                   f"policies:\n  - name: p\n    path: {data}\n    {policy}\n")
    return cfg


def _run_in_process(cfg: Path):  # type: ignore[no-untyped-def]
    from janitor.config import load_config
    from janitor.events import EventLog
    from janitor.runner import run_policies

    config = load_config(str(cfg))
    return run_policies(config, config.policies, EventLog())


@pytest.mark.parametrize("action", list(POLICY))
def test_directory_swapped_right_after_the_last_check(tmp_path: Path, action: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The worst moment for a swap: after the executor's re-check, before the change."""
    import janitor.actions.truncate as truncate_mod
    import janitor.execute as execute_mod

    data, outside = tmp_path / "data", tmp_path / "outside"
    names = [f"f{i}.log" for i in range(5)]
    make_files(data / "sub", names, "IN")
    make_files(outside, names, "CANARY")
    canary = digest_tree(outside)

    def swap() -> None:
        if not (data / "sub").is_symlink():
            (data / "sub").rename(data / "sub.real")
            (data / "sub").symlink_to(outside)

    real_recheck = execute_mod.recheck

    def recheck_then_swap(*args, **kwargs):  # type: ignore[no-untyped-def]
        verdict = real_recheck(*args, **kwargs)
        swap()
        return verdict

    monkeypatch.setattr(execute_mod, "recheck", recheck_then_swap)
    real_links = truncate_mod._check_link_count

    def links_then_swap(*args):  # type: ignore[no-untyped-def]
        real_links(*args)
        swap()

    monkeypatch.setattr(truncate_mod, "_check_link_count", links_then_swap)
    report = _run_in_process(_config(tmp_path, data, POLICY[action]))
    assert digest_tree(outside) == canary
    assert not set(canary.values()) & all_digests(tmp_path / "state", tmp_path / "store", data / "sub.real")
    # janitor acted on the real files through the directory it had opened, or left them
    assert report.result.files + report.result.failed >= 1


@pytest.mark.parametrize("action", ["delete", "soft-delete", "archive", "truncate"])
def test_file_swapped_for_a_symlink_between_plan_and_run(tmp_path: Path, action: str) -> None:
    from janitor.config import load_config
    from janitor.events import EventLog
    from janitor.execute import execute_plan
    from janitor.planner import build_plan
    from janitor.runner import locked_state, new_run_id

    data, outside = tmp_path / "data", tmp_path / "outside"
    make_files(data, ["f.log"], "IN")
    make_files(outside, ["f.log"], "CANARY")
    canary = digest_tree(outside)
    config = load_config(str(_config(tmp_path, data, POLICY[action])))
    plan = build_plan(config, config.policies)
    assert plan.policies[0].actions
    (data / "f.log").unlink()
    (data / "f.log").symlink_to(outside / "f.log")
    with locked_state(config) as catalog:
        result = execute_plan(plan, config, catalog, new_run_id(), EventLog())
    assert result.files == 0
    assert (data / "f.log").is_symlink()
    assert digest_tree(outside) == canary


def test_hard_link_to_an_outside_file(tmp_path: Path) -> None:
    """delete removes only the name; truncate refuses a file with other links (E_UNSAFE) in a
    directory another account can write (in a root-only one the name is root's: see
    test_logcut_hostile.py::test_a_hard_link_made_elsewhere_does_not_stop_rotation_of_roots_log)."""
    data, outside = tmp_path / "data", tmp_path / "outside"
    make_files(outside, ["secret.log"], "CANARY")
    canary = digest_tree(outside)
    data.mkdir()
    os.link(outside / "secret.log", data / "app.log")
    os.chown(data, 65534, 65534)  # the account that could have planted the link
    cut = _run_in_process(_config(tmp_path, data, POLICY["truncate"]))
    assert cut.result.files == 0 and cut.result.policies[0].errors == {"E_UNSAFE": 1}
    assert "hard links" in cut.result.policies[0].messages[0]
    assert digest_tree(outside) == canary and not (data / "app.log.1").exists()
    (tmp_path / "janitor.yaml").unlink()
    gone = _run_in_process(_config(tmp_path, data, POLICY["delete"]))
    assert gone.result.files == 1 and not (data / "app.log").exists()
    assert digest_tree(outside) == canary


# -- private directories ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["state symlink", "trash symlink", "trash group-writable", "state other-writable"])
def test_state_and_trash_directories_an_attacker_controls_are_refused(tmp_path: Path, how: str) -> None:
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    make_files(data, ["f.log"], "IN")
    elsewhere.mkdir(mode=0o700)
    state, trash = tmp_path / "state", tmp_path / "trash"
    if how == "state symlink":
        state.symlink_to(elsewhere)
    elif how == "trash symlink":
        trash.symlink_to(elsewhere)
    elif how == "trash group-writable":
        trash.mkdir()
        trash.chmod(0o770)
    else:
        state.mkdir()
        state.chmod(0o757)
    cfg = tmp_path / "janitor.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {state}\n  settle: 0s\n  trash_dir: {trash}\n"
                   f"policies:\n  - name: p\n    path: {data}\n    action: soft-delete\n    older_than: 1d\n")
    before = digest_tree(data)
    proc = janitor_cmd("run", "-c", str(cfg))
    assert proc.returncode == 1, proc.stderr
    assert "refusing to use it as a janitor directory" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert digest_tree(data) == before and not any(elsewhere.iterdir())


# -- restore with hostile catalog rows and archive keys ---------------------------------------


def _soft_deleted(tmp_path: Path) -> tuple[Path, Path, Path]:
    data = tmp_path / "data"
    make_files(data / "sub", ["f.log"], "IN")
    cfg = _config(tmp_path, data, POLICY["soft-delete"])
    assert janitor_cmd("run", "-c", str(cfg)).returncode == 0
    assert not (data / "sub" / "f.log").exists()
    return cfg, data, tmp_path / "state" / "catalog.db"


@pytest.mark.parametrize("tampered", ["{root}/../outside/f.log", "{outside}/f.log", "{root}/sub/../../outside/f.log",
                                      "{root}"])
def test_restore_refuses_a_tampered_catalog_row(tmp_path: Path, tampered: str) -> None:
    cfg, data, db = _soft_deleted(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    with sqlite3.connect(db) as con:
        con.execute("UPDATE journal SET path=?", [os.fsencode(tampered.format(root=data, outside=outside))])
    proc = janitor_cmd("restore", "--all", "-c", str(cfg))
    assert proc.returncode == 1
    assert "outside policy path" in proc.stderr + proc.stdout
    assert not any(outside.iterdir())


def test_restore_through_a_directory_swapped_for_a_symlink_is_refused(tmp_path: Path) -> None:
    """CVE-2018-6954's shape: a path component became a symlink to elsewhere."""
    cfg, data, _ = _soft_deleted(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (data / "sub").rmdir()
    (data / "sub").symlink_to(outside)
    proc = janitor_cmd("restore", "--all", "-c", str(cfg))
    assert proc.returncode == 1
    assert "symlink" in proc.stderr + proc.stdout
    assert not any(outside.iterdir())


@pytest.mark.parametrize("key", ["../../outside/f.log", "/etc/passwd", "p/../../x", "p/a\0b"])
def test_restore_from_archive_refuses_a_hostile_key(tmp_path: Path, key: str) -> None:
    data = tmp_path / "data"
    make_files(data, ["f.log"], "IN")
    cfg = _config(tmp_path, data, POLICY["archive"])
    assert janitor_cmd("run", "-c", str(cfg)).returncode == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    with sqlite3.connect(tmp_path / "state" / "catalog.db") as con:
        con.execute("UPDATE journal SET object_key=?", [key])
    proc = janitor_cmd("restore", "--from-archive", "--all", "-c", str(cfg))
    assert proc.returncode == 1
    assert not (data / "f.log").exists() and not any(outside.iterdir())
    assert "Traceback" not in proc.stderr
