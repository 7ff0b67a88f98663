"""One odd file name, or one journal row nothing can settle, fails that file or row alone:
never the policy, never the run, never a later run (red team findings 5, 7 and 8).

The names are made by the real unprivileged account (tests/attacker.py) in its own directory
below the policy path, as the service's own output directory would be.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from attacker import Attacker

from janitor.config import load_config
from janitor.events import EventLog
from janitor.runner import locked_state, run_policies

OLD = time.time() - 30 * 86400
Cli = Callable[..., subprocess.CompletedProcess[str]]

# a sidecar/temp name of the file:// target, a key the target calls absolute, a name that is
# not UTF-8 (its archive key cannot be stored in the catalog's text column)
HOSTILE = [b"evil.janitor.json", b"evil.janitor-tmp", b"\\render.mp4", b"\xff\xfe.bin"]


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text and "internal error" not in text.lower(), text[-3000:]


def _make_files(attacker: Attacker, udir: Path, names: list[bytes]) -> None:
    r = attacker.run(f"""
        import os
        for n in {names!r}:
            p = os.path.join(os.fsencode({str(udir)!r}), n)
            with open(p, "wb") as f:
                f.write(b"payload of " + n)
            os.utime(p, ({OLD!r}, {OLD!r}))
    """)
    assert r.returncode == 0, r.stderr


def _archive_config(root: Path, data: Path, store: Path, extra: str = "") -> Path:
    cfg = root / "j.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {root / 'state'}\n  settle: 0s\n"
                   f"targets:\n  nas:\n    url: file://{store}\n"
                   f"policies:\n  - name: arch\n    path: {data}\n    action: archive\n    target: nas\n"
                   f"    older_than: 1d\n{extra}")
    return cfg


@pytest.mark.parametrize("name", HOSTILE, ids=["sidecar", "tmp", "backslash", "not-utf8"])
def test_a_hostile_name_fails_that_file_only(cli: Cli, attacker: Attacker, hostile_root: Path, name: bytes) -> None:
    data = hostile_root / "data"
    data.mkdir()
    udir = attacker.mkdir(data / "u")
    store = hostile_root / "store"
    store.mkdir(mode=0o700)
    other = hostile_root / "other"  # a later, unrelated policy must run as well
    other.mkdir()
    junk = other / "old.tmp"
    junk.write_bytes(b"x")
    os.utime(junk, (OLD, OLD))
    _make_files(attacker, udir, [b"a.bin", name])
    cfg = _archive_config(hostile_root, data, store,
                          f"  - name: tmp\n    path: {other}\n    action: delete\n    match: ['*.tmp']\n"
                          f"    older_than: 1d\n")
    for _ in range(2):  # the name stays: the second run must be as fine as the first
        done = cli("run", "-c", cfg)
        _no_traceback(done)
        # 1: that one file failed (a target refusing the name); 0: this target takes it
        assert done.returncode in (0, 1), done.stdout + done.stderr
    assert not (udir / "a.bin").exists(), "the file next to the hostile name was never archived"
    assert not junk.exists(), "the later policy never ran"
    hostile = os.path.join(os.fsencode(udir), name)
    if os.path.lexists(hostile):  # refused: left alone, intact, still the attacker's
        assert Path(os.fsdecode(hostile)).read_bytes() == b"payload of " + name
        assert os.stat(hostile).st_uid == attacker.uid
    db = sqlite3.connect(hostile_root / "state" / "catalog.db")
    states = {row[0] for row in db.execute("SELECT state FROM journal")}
    assert "planned" not in states  # no row left for reconcile to trip over
    db.close()
    r = cli("restore", "--from-archive", "--all", "-c", cfg)
    _no_traceback(r)
    assert (udir / "a.bin").read_bytes() == b"payload of a.bin", r.stdout + r.stderr


def test_a_failed_catalog_write_leaves_no_transaction_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row the catalog cannot encode (UnicodeEncodeError inside add_planned's BEGIN) fails
    that file; the run is recorded (finish_run does not meet "transaction within a transaction")."""
    from janitor.actions.delete import DeleteAction

    root = tmp_path / "data"
    root.mkdir()
    for n in ("a.tmp", "b.tmp"):
        (root / n).write_bytes(b"x")
        os.utime(root / n, (OLD, OLD))
    cfg = tmp_path / "j.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {tmp_path / 'state'}\n  settle: 0s\n"
                   f"policies:\n  - name: tmp\n    path: {root}\n    action: delete\n    older_than: 1d\n")
    real = DeleteAction.journal_fields

    def poisoned(self, item, ctx):  # type: ignore[no-untyped-def]
        fields = dict(real(self, item, ctx))
        if item.path.endswith("a.tmp"):
            fields["detail"] = "\udcff"  # what a non-UTF-8 name gives; only the catalog refuses it
        return fields

    monkeypatch.setattr(DeleteAction, "journal_fields", poisoned)
    monkeypatch.setattr("janitor.execute._check_storable", lambda fields: None)  # reach the catalog
    config = load_config(str(cfg))
    report = run_policies(config, config.select(None), EventLog())
    assert report.result.failed == 1 and report.result.files == 1
    assert (root / "a.tmp").exists() and not (root / "b.tmp").exists()
    with locked_state(config) as catalog:
        run = catalog.last_run()
        assert run is not None and run["status"] == "partial"
        assert not catalog.db.in_transaction


def test_a_row_reconcile_cannot_settle_is_failed_and_later_runs_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 5: any exception of one row's reconcile (a target's ValueError) settles that row
    as failed with the reason; the run and the next ones go on."""
    from janitor.actions import softdelete
    from janitor.actions.softdelete import SoftDeleteAction

    root = tmp_path / "data"
    root.mkdir()
    for n in ("a.tmp", "b.tmp"):
        (root / n).write_bytes(b"x")
        os.utime(root / n, (OLD, OLD))
    cfg = tmp_path / "j.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {tmp_path / 'state'}\n  settle: 0s\n"
                   f"policies:\n  - name: soft\n    path: {root}\n    action: soft-delete\n    older_than: 1d\n"
                   f"    retain: 1d\n")
    config = load_config(str(cfg))

    def die(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt  # killed before recording: the batch stays `planned`

    monkeypatch.setattr(softdelete, "move_into_trash", die)
    with pytest.raises(KeyboardInterrupt):
        run_policies(config, config.select(None), EventLog())
    monkeypatch.undo()

    def poisoned(cls, entry, config):  # type: ignore[no-untyped-def]
        raise ValueError(f"key {entry.path!r} collides with janitor's own file names")

    monkeypatch.setattr(SoftDeleteAction, "reconcile_with", classmethod(poisoned))
    for expected in (2, 0):
        report = run_policies(config, config.select(None), EventLog())
        assert report.reconciled == expected
    with locked_state(config) as catalog:
        rows = [e for e in catalog.entries() if e.state == "failed"]
        assert len(rows) == 2
        assert all(e.error and "ValueError" in e.error and "collides" in e.error for e in rows)
