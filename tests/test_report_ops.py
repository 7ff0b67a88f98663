"""`janitor report` says what is stored and what would be freed, once per thing (issue 12:
defect 8 and the report friction)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import DAY, Tree

ARCHIVE = """\
version: 1
settings:
  state_dir: {state}
  settle: 0s
targets:
  nas:
    url: file://%s
policies:
  - name: cold
    path: {root}
    match: ["*.bin"]
    older_than: 1d
    action: archive
    target: nas
    then: keep
"""


def test_report_counts_stored_objects_not_catalog_rows(tree: Tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "target"
    target.mkdir()
    for i in range(4):
        tree.file(f"a{i}.bin", 1000, age=3 * DAY)
    cfg = write_config(ARCHIVE % target)
    for _ in range(3):  # `then: keep`: every run finds the same four objects already stored
        assert cli("run", "-c", cfg).returncode == 0
    stored = [p for p in target.rglob("*.bin") if p.is_file()]
    assert len(stored) == 4
    data = json.loads(cli("report", "-c", cfg, "--json").stdout)
    assert data["archived"] == {"nas": {"files": 4, "bytes": 4000}}
    text = cli("report", "-c", cfg).stdout
    assert "stored in the archive nas: 4 objects, 3.9 KiB" in text
    # then: keep frees nothing
    (pol,) = data["policies"]
    assert pol["would_bytes"] == 4000 and pol["frees_bytes"] == 0


NESTED = """\
version: 1
settings:
  state_dir: {state}
  settle: 0s
  trash_dir: {root}-trash  # beside the policy paths, on the same filesystem (inside one is refused)
policies:
  - name: all
    path: {root}
    older_than: 1d
    action: delete
  - name: sub
    path: {root}/sub
    older_than: 1d
    action: archive
    target: nas
    then: soft-delete
  - name: other
    path: {root}/other
    older_than: 1d
    action: soft-delete
targets:
  nas:
    url: file://%s
"""


def test_report_groups_a_filesystem_and_counts_nested_paths_once(tree: Tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "target").mkdir()
    tree.file("top.dat", 100, age=3 * DAY)
    tree.file("sub/inner.dat", 1000, age=3 * DAY)
    tree.file("other/x.dat", 10, age=3 * DAY)
    cfg = write_config(NESTED % (tmp_path / "target"))
    data = json.loads(cli("report", "-c", cfg, "--json").stdout)
    by_path = {p["path"]: p for p in data["paths"]}
    root = str(tree.root)
    assert (by_path[root]["files"], by_path[root]["bytes"]) == (1, 100)  # sub/ and other/ are their own
    assert sorted(by_path[root]["excluded"]) == [f"{root}/other", f"{root}/sub"]
    assert (by_path[f"{root}/sub"]["files"], by_path[f"{root}/sub"]["bytes"]) == (1, 1000)
    assert sum(p["bytes"] for p in data["paths"]) == 1110  # every byte once
    frees = {p["name"]: (p["would_bytes"], p["frees_bytes"]) for p in data["policies"]}
    assert frees["sub"] == (1000, 0)  # archive then soft-delete: the trash is on this filesystem
    assert frees["other"] == (10, 0)
    assert frees["all"][1] == frees["all"][0] > 0
    text = cli("report", "-c", cfg).stdout
    assert text.count("% used") == 1  # one filesystem, one usage line
    assert "filesystem (3 policy paths below)" in text
    assert "frees space only when purged" in text
