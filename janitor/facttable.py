"""Columnar file facts: the plan's memory follows the file count at ~60-80 bytes a file.

A `FileFact` object with its boxed numbers and path string costs about 330 bytes, and a
plan of 1,000,000 files used to hold one per file (plus a reason string and an action
object): 480 MB for a `run`, 950 MB for `plan --json`. Here the same facts live in typed
arrays and one byte buffer of paths; a `FileFact` is built only while a file is looked at
(a batch at a time by the executor) and dropped after.

- `FactTable`: the files a walk kept, as a read-only sequence of FileFact.
- `ActionList`: a policy's planned actions; a `list` to every consumer (the executor slices
  it in batches, actions iterate it), stored in columns.
"""

from __future__ import annotations

import os
import pickle
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, BinaryIO, SupportsIndex, overload

from .planitem import LazyReason, PlannedAction
from .scan import FileFact

_ENC = "surrogateescape"
# FileFact is a named tuple: made straight from its twelve fields, without the keyword
# handling of its constructor (the executor and `plan --json` make one per file)
_new_fact = tuple.__new__


class _Columns:
    """FileFact fields in arrays; paths in one buffer with end offsets."""

    __slots__ = ("_paths", "_ends", "_dev", "_ino", "_size", "_mode", "_uid", "_gid", "_mtime", "_atime", "_ctime",
                 "_blocks", "_nlink")

    def __init__(self) -> None:
        self._paths = bytearray()
        # Each integer column starts at the narrowest type that holds the common values (an
        # ext4 inode, a uid, a small file's size) and is widened, once, by the first value
        # that does not fit (`_widen`): 62 bytes a file instead of 95 at 1,000,000 files.
        self._ends = array("I")
        self._dev = array("I")
        self._ino = array("I")
        self._size = array("I")
        self._mode = array("H")
        self._uid = array("H")
        self._gid = array("H")
        self._mtime = array("d")
        self._atime = array("d")
        self._ctime = array("d")
        # what quota counts (allocated blocks, each inode once) and archive checks (links)
        self._blocks = array("I")
        self._nlink = array("H")

    def __len__(self) -> int:
        return len(self._ends)

    def _add(self, relpath: str, dev: int, ino: int, size: int, mtime: float, atime: float, ctime: float,
             mode: int, uid: int, gid: int, blocks: int, nlink: int) -> None:
        paths = self._paths
        try:
            paths += relpath.encode("utf-8", _ENC)
            self._ends.append(len(paths))
            self._dev.append(dev)
            self._ino.append(ino)
            self._size.append(size)
            self._mode.append(mode)
            self._uid.append(uid)
            self._gid.append(gid)
            self._mtime.append(mtime)
            self._atime.append(atime)
            self._ctime.append(ctime)
            self._blocks.append(blocks)
            self._nlink.append(nlink)  # the last column: its length is the row count before this row
        except OverflowError:
            self._add_widening(relpath, (dev, ino, size, mode, uid, gid, mtime, atime, ctime, blocks, nlink))

    def _add_widening(self, relpath: str, values: tuple[int | float, ...]) -> None:
        """`_add` for a row with a value too wide for its column: undo what the row had
        appended, widen the columns it does not fit, append again."""
        n = len(self._nlink)
        del self._paths[self._ends[n - 1] if n else 0:]
        for column in _Columns.__slots__[1:]:
            del getattr(self, column)[n:]
        self._paths += relpath.encode("utf-8", _ENC)
        for column, value in zip(_Columns.__slots__[1:], (len(self._paths), *values), strict=True):
            _append_widening(self, column, value)

    def add_fact(self, f: FileFact) -> None:
        self._add(f.relpath, f.dev, f.ino, f.size, f.mtime, f.atime, f.ctime, f.mode, f.uid, f.gid, f.blocks, f.nlink)

    def add_stat(self, relpath: str, st: os.stat_result) -> None:
        self._add(relpath, st.st_dev, st.st_ino, st.st_size, st.st_mtime, st.st_atime, st.st_ctime, st.st_mode,
                  st.st_uid, st.st_gid, st.st_blocks, st.st_nlink)

    def copy_rows(self, src: _Columns, rows: Sequence[int]) -> None:
        """Append these rows of `src`, column by column: no FileFact is made."""
        for column in _Columns.__slots__[2:]:
            mine, theirs = getattr(self, column), getattr(src, column)
            picked = array(theirs.typecode, map(theirs.__getitem__, rows))
            if mine.typecode == picked.typecode:
                mine.extend(picked)
            else:
                setattr(self, column, _widest(mine, picked))
        paths, ends, src_paths, src_ends = self._paths, self._ends, src._paths, src._ends
        for row in rows:
            paths += src_paths[src_ends[row - 1] if row else 0:src_ends[row]]
            try:
                ends.append(len(paths))
            except OverflowError:
                _append_widening(self, "_ends", len(paths))
                ends = self._ends

    def write_to(self, out: BinaryIO) -> None:
        """Every column as its raw bytes, after a header of their types and lengths: what
        `append_from` reads (another process's walk sent to the planner)."""
        columns = [getattr(self, name) for name in _Columns.__slots__]
        pickle.dump([(name, "B" if name == "_paths" else column.typecode, len(column) * column.itemsize
                      if name != "_paths" else len(column)) for name, column in zip(_Columns.__slots__, columns,
                                                                                      strict=True)], out)
        for column in columns:
            out.write(memoryview(column).cast("B"))

    def append_from(self, src: BinaryIO) -> None:
        """Append the rows `write_to` wrote, read a megabyte at a time: never a whole column
        of them in memory besides these columns (a million rows are ~70 MB)."""
        header: list[tuple[str, str, int]] = pickle.load(src)
        if [name for name, _, _ in header] != list(_Columns.__slots__):
            raise ValueError("not the columns of a fact table")
        base = len(self._paths)
        for name, code, nbytes in header:
            itemsize = 1 if name == "_paths" else array(code).itemsize
            step = max(itemsize, (1 << 20) // itemsize * itemsize)
            while nbytes > 0:
                chunk = src.read(min(step, nbytes))
                if not chunk or len(chunk) % itemsize:
                    raise EOFError("the walk's columns ended early")
                nbytes -= len(chunk)
                if name == "_paths":
                    self._paths += chunk
                    continue
                values = array(code, chunk)
                if name == "_ends" and base:  # offsets into the paths after this table's own
                    try:
                        values = array(code, (end + base for end in values))
                    except OverflowError:
                        values = array("Q", (end + base for end in values))
                _extend_widening(self, name, values)
        if not len(self._ends) == len(self._nlink) == len(self._dev):
            raise ValueError("the walk's columns are of different lengths")

    def fact(self, row: int) -> FileFact:
        start = self._ends[row - 1] if row else 0
        return _new_fact(FileFact, (self._paths[start:self._ends[row]].decode("utf-8", _ENC), self._dev[row],
                                    self._ino[row], self._size[row], self._mtime[row], self._atime[row],
                                    self._ctime[row], self._mode[row], self._uid[row], self._gid[row],
                                    self._blocks[row], self._nlink[row]))

    def column(self, name: str) -> array[Any]:
        """One field of every row as stored: dev, ino, size, mode, uid, gid, mtime, atime,
        ctime, blocks, nlink (for arithmetic over all files without a FileFact each)."""
        if "_" + name not in _Columns.__slots__[2:]:
            raise KeyError(name)
        column: array[Any] = getattr(self, "_" + name)
        return column

    def size_of(self, row: int) -> int:
        return self._size[row]

    def key_of(self, row: int) -> tuple[int, int]:
        """(dev, ino)."""
        return self._dev[row], self._ino[row]

    def relpath_of(self, row: int) -> str:
        start = self._ends[row - 1] if row else 0
        return self._paths[start:self._ends[row]].decode("utf-8", _ENC)

    def age_column(self, age_by: str) -> array[float]:
        return self._mtime if age_by == "mtime" else self._atime if age_by == "atime" else self._ctime

    def total_size(self) -> int:
        return sum(self._size)


# the next wider type of an integer column that overflowed: unsigned 2, 4, 8 bytes
_WIDER = {"H": "I", "I": "Q"}


def _append_widening(columns: _Columns, column: str, value: int | float) -> None:
    """Append to a column, first widening it (a copy, once) until the value fits."""
    target = getattr(columns, column)
    while True:
        try:
            target.append(value)
            return
        except OverflowError:
            # a negative value (never seen in a stat, but a saved plan is only data) goes
            # to the signed 8-byte type, as does one too wide for the widest unsigned one
            code = "q" if value < 0 or target.typecode not in _WIDER else _WIDER[target.typecode]
            if code == target.typecode:
                raise
            target = array(code, target)
            setattr(columns, column, target)


def _extend_widening(columns: _Columns, column: str, values: array[Any]) -> None:
    """Extend a column by these values, first widening it to their type if theirs is wider."""
    target = getattr(columns, column)
    if target.typecode != values.typecode:
        order = "HIQq" if target.typecode in "HIQq" and values.typecode in "HIQq" else None
        if order is None:
            raise ValueError(f"column {column}: {values.typecode} values for a {target.typecode} column")
        if order.index(values.typecode) > order.index(target.typecode):
            target = array(values.typecode, target)
            setattr(columns, column, target)
        else:
            values = array(target.typecode, values)
    target.extend(values)


def _widest(mine: array[Any], picked: array[Any]) -> array[Any]:
    """`mine` followed by `picked`, in whichever of their two types holds both."""
    code = max(mine.typecode, picked.typecode, key="HIQq".index)
    out = array(code, mine)
    out.extend(array(code, picked))
    return out


class FactTable(_Columns, Sequence[FileFact]):
    """The files a walk kept, in columns; reads back as FileFact objects made on access."""

    __slots__ = ()

    @overload
    def __getitem__(self, index: int) -> FileFact: ...
    @overload
    def __getitem__(self, index: slice) -> list[FileFact]: ...
    def __getitem__(self, index: int | slice) -> FileFact | list[FileFact]:
        if isinstance(index, slice):
            return [self.fact(i) for i in range(*index.indices(len(self)))]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("FactTable index out of range")
        return self.fact(index)

    def __iter__(self) -> Iterator[FileFact]:
        fact = self.fact
        for row in range(len(self)):
            yield fact(row)

    def rows(self, wanted: Iterable[int]) -> FactRows:
        return FactRows(self, array("I", wanted))


class FactRows(Sequence[FileFact]):
    """Some rows of a FactTable, in a given order (4 bytes a row; none for a `range` of them all)."""

    __slots__ = ("_table", "_rows")

    def __init__(self, table: FactTable, rows: Sequence[int]) -> None:
        self._table = table
        self._rows = rows

    @property
    def table(self) -> FactTable:
        return self._table

    @property
    def row_numbers(self) -> Sequence[int]:
        return self._rows

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> FileFact: ...
    @overload
    def __getitem__(self, index: slice) -> list[FileFact]: ...
    def __getitem__(self, index: int | slice) -> FileFact | list[FileFact]:
        if isinstance(index, slice):
            return [self._table.fact(r) for r in self._rows[index]]
        return self._table.fact(self._rows[index])

    def __iter__(self) -> Iterator[FileFact]:
        fact = self._table.fact
        for row in self._rows:
            yield fact(row)


class _RowView:
    """Rows of a FactTable read through its row numbers (4 bytes a row, or a range): the plan of a
    plain selection shares the walk's columns instead of holding a second copy of them."""

    __slots__ = ("table", "rows")

    def __init__(self, table: _Columns, rows: Sequence[int]) -> None:
        self.table, self.rows = table, rows

    def __len__(self) -> int:
        return len(self.rows)

    def fact(self, row: int) -> FileFact:
        return self.table.fact(self.rows[row])

    def size_of(self, row: int) -> int:
        return self.table.size_of(self.rows[row])

    def age_column(self, age_by: str) -> array[float]:
        column = self.table.age_column(age_by)
        return array(column.typecode, map(column.__getitem__, self.rows))

    def total_size(self) -> int:
        size_of = self.table.size_of
        return sum(map(size_of, self.rows))

    def owned(self) -> _Columns:
        """The same rows as columns of their own (before rows are added)."""
        columns = _Columns()
        columns.copy_rows(self.table, self.rows)
        return columns


class _Repeat(Sequence[Any]):
    """One value, n times, in constant space: the reason and detail of a plain selection."""

    __slots__ = ("value", "n")

    def __init__(self, value: Any, n: int) -> None:
        self.value, self.n = value, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self.value] * len(range(*index.indices(self.n)))
        if not -self.n <= index < self.n:
            raise IndexError("index out of range")
        return self.value


class ActionList(list["PlannedAction"]):
    """A policy's planned actions, stored in columns, read back as PlannedAction objects.

    A `list` subclass so that every consumer typed for `list[PlannedAction]` (the executor's
    batches, actions' `before_actions`) works unchanged; every method a consumer can call
    is implemented over the columns (the list's own storage stays empty). Rows are added
    with `append`; the order is the order the run acts in.
    """

    __slots__ = ("policy", "action", "root", "_facts", "_reasons", "_details")

    def __init__(self, policy: str, action: str, root: str, items: Iterable[PlannedAction] = ()) -> None:
        super().__init__()
        self.policy, self.action, self.root = policy, action, root
        self._facts: _Columns | _RowView = _Columns()
        # mostly one shared object (8 bytes a row), or one value for every row (_Repeat)
        self._reasons: list[str | LazyReason] | _Repeat = []
        self._details: list[dict[str, Any] | None] | _Repeat = []
        for item in items:
            self.append(item)

    @classmethod
    def of_rows(cls, policy: str, action: str, root: str, rows: FactRows, reason: str | LazyReason,
                detail: dict[str, Any] | None = None) -> ActionList:
        """Every one of these rows, for one reason and detail: what a plain selection (or
        quota's) amounts to. Shares the table's columns (a view through the row numbers)
        instead of copying them."""
        chosen = cls(policy, action, root)
        chosen._facts = _RowView(rows.table, rows.row_numbers)
        chosen._reasons = _Repeat(reason, len(rows))
        chosen._details = _Repeat(detail, len(rows))
        return chosen

    # adding ------------------------------------------------------------------------------

    def add(self, fact: FileFact, reason: str | LazyReason, detail: dict[str, Any] | None) -> None:
        facts = self._facts
        if isinstance(facts, _RowView):  # rows added to a view: from now on, columns of its own
            facts = self._facts = facts.owned()
        if isinstance(self._reasons, _Repeat):
            self._reasons = list(self._reasons)
        if isinstance(self._details, _Repeat):
            self._details = list(self._details)
        facts.add_fact(fact)
        self._reasons.append(reason)
        self._details.append(detail)

    def append(self, item: PlannedAction) -> None:
        if (item.policy, item.action, item.root) != (self.policy, self.action, self.root):
            raise ValueError("an ActionList holds the actions of one policy")
        self.add(item.fact, item.why, item.detail)

    def extend(self, items: Iterable[PlannedAction]) -> None:
        for item in items:
            self.append(item)

    # reading -----------------------------------------------------------------------------

    def _item(self, row: int) -> PlannedAction:
        return PlannedAction(self.policy, self.action, self.root, self._facts.fact(row), self._reasons[row],
                             self._details[row])

    def __len__(self) -> int:
        return len(self._facts)

    def __bool__(self) -> bool:
        return len(self._facts) > 0

    def __iter__(self) -> Iterator[PlannedAction]:
        item = self._item
        for row in range(len(self._facts)):
            yield item(row)

    def __reversed__(self) -> Iterator[PlannedAction]:
        item = self._item
        for row in range(len(self._facts) - 1, -1, -1):
            yield item(row)

    @overload
    def __getitem__(self, index: SupportsIndex) -> PlannedAction: ...
    @overload
    def __getitem__(self, index: slice) -> list[PlannedAction]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> PlannedAction | list[PlannedAction]:
        if isinstance(index, slice):  # the executor's batches: made in one pass, not row by row
            rows = range(*index.indices(len(self)))
            policy, action, root = self.policy, self.action, self.root
            return [PlannedAction(policy, action, root, fact, reason, detail) for fact, reason, detail
                    in zip(map(self._facts.fact, rows), self._reasons[index], self._details[index], strict=True)]
        i = index.__index__()
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("ActionList index out of range")
        return self._item(i)

    def __contains__(self, value: object) -> bool:
        return any(item == value for item in self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, list):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None

    def __repr__(self) -> str:
        return f"ActionList({self.policy!r}, {len(self)} actions)"

    def copy(self) -> list[PlannedAction]:
        return list(iter(self))

    def index(self, value: PlannedAction, start: SupportsIndex = 0, stop: SupportsIndex = 2**63 - 1) -> int:
        for row in range(start.__index__(), min(stop.__index__(), len(self))):
            if self._item(row) == value:
                return row
        raise ValueError("not in the ActionList")

    def count(self, value: PlannedAction) -> int:
        return sum(1 for item in self if item == value)

    def sizes_total(self) -> int:
        return self._facts.total_size()

    # reordering --------------------------------------------------------------------------

    def reorder(self, rows: Sequence[int]) -> None:
        """Keep these rows, in this order (e.g. oldest first, then cut at what must go)."""
        old, reasons, details = self._facts, self._reasons, self._details
        if isinstance(old, _RowView):
            self._facts = _RowView(old.table, array("I", map(old.rows.__getitem__, rows)))
        else:
            self._facts = columns = _Columns()
            for row in rows:
                columns.add_fact(old.fact(row))
        self._reasons = (_Repeat(reasons.value, len(rows)) if isinstance(reasons, _Repeat)
                         else [reasons[row] for row in rows])
        self._details = (_Repeat(details.value, len(rows)) if isinstance(details, _Repeat)
                         else [details[row] for row in rows])

    def rows_by(self, key: Callable[[int], Any]) -> list[int]:
        return sorted(range(len(self)), key=key)

    def age_column(self, age_by: str) -> array[float]:
        return self._facts.age_column(age_by)

    def size_of(self, row: int) -> int:
        return self._facts.size_of(row)

    def sort(self, *, key: Callable[[PlannedAction], Any] | None = None, reverse: bool = False) -> None:
        order = sorted(range(len(self)), key=(lambda r: key(self._item(r))) if key else None,
                       reverse=reverse)
        self.reorder(order)

    def _unsupported(self, *args: object, **kw: object) -> Any:
        raise TypeError("an ActionList is appended to or reordered, not edited in place")

    insert = remove = pop = clear = __setitem__ = __delitem__ = __iadd__ = __imul__ = __add__ = __mul__ = _unsupported
