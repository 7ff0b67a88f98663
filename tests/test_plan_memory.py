"""Flat memory: a plan keeps its files in columns (issue 13), and still reads as a list."""

from __future__ import annotations

import gc
import os
import tracemalloc
from pathlib import Path

import pytest
from conftest import DAY, Tree

from janitor.config import load_config
from janitor.facttable import ActionList, FactTable
from janitor.plan import LazyReason, PlannedAction
from janitor.planner import build_plan
from janitor.scan import FileFact

POLICY = """\
version: 1
settings: {{state_dir: {state}, settle: 0s, max_actions: 1000000}}
policies:
  - {{name: old, path: {root}, older_than: 7d, action: delete}}
"""


def fact(i: int) -> FileFact:
    return FileFact(os.fsdecode(b"d/f%d-\xff.bin" % i), 2049, 1000 + i, i, 1e9 + i, 1e9 + 2 * i, 1e9 + 3 * i,
                    0o100644, 1000, 1000, blocks=8 * i + 1, nlink=1 + i % 3)


def test_a_plan_holds_about_a_hundred_bytes_a_file(tree: Tree, write_config) -> None:  # type: ignore[no-untyped-def]
    n = 20_000
    for i in range(n):
        if i % 100 == 0:
            (tree.root / f"d{i // 100:03d}").mkdir()
        path = tree.root / f"d{i // 100:03d}" / f"render_output_{i:06d}.wav"
        path.write_bytes(b"x")
        os.utime(path, (tree.now - 8 * DAY - i, tree.now - 8 * DAY - i))
    cfg = load_config(str(write_config(POLICY)))
    gc.collect()
    tracemalloc.start()
    try:
        plan = build_plan(cfg, cfg.select(None))
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert plan.total_files == n
    # a FileFact, a reason string and a PlannedAction per file took ~570 bytes a file
    assert held / n < 160, held / n
    assert peak / n < 400, peak / n


def test_an_action_list_reads_like_the_list_it_replaces() -> None:
    reason = LazyReason(lambda f: f"size {f.size}")
    items = [PlannedAction("p", "delete", "/srv", fact(i), reason if i % 2 else "own reason",
                           {"then": "delete"} if i == 3 else None) for i in range(10)]
    actions = ActionList("p", "delete", "/srv", items)
    assert isinstance(actions, list) and len(actions) == 10 and actions
    assert list(actions) == items and actions == items
    assert actions[3] == items[3] and actions[-1] == items[-1] and actions[2:5] == items[2:5]
    assert actions[::-3] == items[::-3] and actions[-4:] == items[-4:] and actions[7:2] == []
    assert [a.reason for a in actions] == [a.reason for a in items]
    assert actions[3].detail == {"then": "delete"} and actions[0].path == "/srv/" + fact(0).relpath
    assert list(reversed(actions)) == items[::-1] and items[4] in actions
    assert actions.sizes_total() == sum(range(10))
    actions.sort(key=lambda a: -a.fact.size)
    assert [a.fact.ino for a in actions] == [1009 - i for i in range(10)]
    with pytest.raises(TypeError):
        actions.insert(0, items[0])
    with pytest.raises(ValueError):
        actions.append(PlannedAction("other", "delete", "/srv", fact(0), "x"))
    assert not ActionList("p", "delete", "/srv")


def test_a_fact_table_keeps_every_field_of_a_real_stat(tmp_path: Path) -> None:
    """Every FileFact field survives the columns (quota counts blocks, archive checks links)."""
    from janitor.scan import fact_from_stat

    (tmp_path / "f").write_bytes(b"x" * 10_000)
    os.link(tmp_path / "f", tmp_path / "g")
    st = os.stat(tmp_path / "f")
    table = FactTable()
    table.add_stat("f", st)
    assert table[0] == fact_from_stat("f", st) and table[0].blocks == st.st_blocks > 0 and table[0].nlink == 2


def test_a_fact_table_gives_back_what_was_stored(tmp_path: Path) -> None:
    table = FactTable()
    for i in range(5):
        table.add_fact(fact(i))
    assert list(table) == [fact(i) for i in range(5)] and table[-1] == fact(4) and table[1:3] == [fact(1), fact(2)]
    assert table.rows([4, 0]).__getitem__(0) == fact(4) and list(table.rows([4, 0])) == [fact(4), fact(0)]


def wide_fact(i: int) -> FileFact:
    """Values past the narrow column types: an XFS 64-bit inode, a 5 GB file, a subuid, many links."""
    return FileFact(f"big/{i}", 2**40 + 7, 2**40 + i, 5 * 2**30 + i, 1.5e9, 1.5e9, 1.5e9, 0o100600, 100_000 + i,
                    2**31 + i, blocks=2**33 + i, nlink=70_000 + i)


def test_a_value_wider_than_its_column_widens_it_and_loses_nothing() -> None:
    """The columns start narrow (a uid in 2 bytes); the first file that does not fit widens them."""
    table = FactTable()
    table.add_fact(fact(1))
    table.add_fact(wide_fact(2))  # the row in the middle of the columns is undone and added again
    table.add_fact(fact(3))
    table.add_fact(wide_fact(4))
    assert list(table) == [fact(1), wide_fact(2), fact(3), wide_fact(4)]


def test_rows_copied_between_columns_of_different_widths_keep_their_values() -> None:
    narrow, wide = FactTable(), FactTable()
    for i in range(3):
        narrow.add_fact(fact(i))
        wide.add_fact(wide_fact(i))
    plan = ActionList.of_rows("p", "delete", "/srv", narrow.rows(range(3)), "old")
    plan.add(wide_fact(9), "own", None)  # the view becomes columns of its own, then widens
    assert [item.fact for item in plan] == [fact(0), fact(1), fact(2), wide_fact(9)]
    mixed = ActionList.of_rows("p", "delete", "/srv", wide.rows([2, 0]), "old")
    mixed.add(fact(5), "own", None)
    assert [item.fact for item in mixed] == [wide_fact(2), wide_fact(0), fact(5)]
