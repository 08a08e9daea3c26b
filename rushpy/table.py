"""Tables of task rows returned by every ``fetch_*`` method.

A :class:`Table` is a list of rows (plain dicts) with column access and
conversion to pandas or polars when those libraries are installed. Rows carry
``key``, ``state``, ``worker_id``, the entries of ``xs``, ``ys``, ``xs_extra``
and ``ys_extra`` as flat columns, ``condition`` (failed tasks), ``conditions``
(every failure of the task, oldest first), ``attempts`` (times the task was
started), ``max_retries``, ``timeout`` and ``seed`` when set, and the
timestamps ``created_at``, ``started_at``, ``finished_at`` (UTC datetimes). An
entry whose name is already taken by an earlier column is prefixed with its
group, e.g. ``ys.key``.

Tasks pushed with ``capture_output=True`` have ``stdout`` and ``warnings``
columns (output relay): from ``ys_extra`` when finished, from the entries of
``condition`` when failed.

A task whose stored data is damaged (a field that is not valid msgpack or has
the wrong type, or a task key that is not a hash: see :mod:`rushpy.fields`)
still gets its row, with the fields that could be read and an ``error``
column naming each bad field and why, e.g. ``field 'xs' is not valid msgpack
(...)``. Rows of intact tasks have no ``error`` entry; reads never raise for
bad data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

from rushpy.fields import DamagedTask

if TYPE_CHECKING:
    import pandas
    import polars

    from rushpy.columns import RowColumns

__all__ = ["RESERVED_COLUMNS", "ROW_FIELDS", "Table", "flatten_task"]

RESERVED_COLUMNS = ("key", "state", "worker_id")
"""Columns every row starts with."""

_GROUPS = ("xs", "ys", "xs_extra", "ys_extra")
_OUTPUT = ("stdout", "warnings")
_ALWAYS = frozenset({"condition", "created_at", "started_at", "finished_at"})
_TRAILING = (
    "condition",
    "conditions",
    "attempts",
    "max_retries",
    "timeout",
    "seed",
    "created_at",
    "started_at",
    "finished_at",
)
ROW_FIELDS = (*_GROUPS, *_TRAILING)
"""Task fields a row shows besides ``worker_id``: the groups flattened into columns, then the rest."""


def flatten_task(key: str, state: str, task: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a decoded task hash into a flat row (with ``error`` for a :class:`~rushpy.fields.DamagedTask`)."""
    row: dict[str, Any] = {"key": key, "state": state, "worker_id": task.get("worker_id")}
    # Input and output names give way to the task's own fields; the optional ones
    # (attempts, seed, ...) only where the task has them, so an input called
    # "seed" keeps its name in a network that uses no seeds.
    reserved = {name for name in _TRAILING if name in _ALWAYS or name in task}
    damaged = type(task) is not dict and isinstance(task, DamagedTask)
    if damaged:
        reserved.add("error")  # an input called "error" gives way, as for "seed"
    for group in _GROUPS:
        values = task.get(group)
        if not values:
            continue
        for name, value in values.items():
            column = str(name)
            while column in row or column in reserved:
                column = f"{group}.{column}"
            row[column] = value
    for name in _TRAILING:
        if name in task:
            row[name] = task[name]
    condition = task.get("condition")
    if type(condition) is dict and "stdout" in condition:
        # Output relay: a failed task's captured output is in its condition; show it
        # in the same columns as a finished task's (from ys_extra).
        for name in _OUTPUT:
            if name in condition and name not in row:
                row[name] = condition[name]
    if damaged:
        row["error"] = task.error  # type: ignore[attr-defined]  # narrowed by isinstance above
    return row


class Table(Sequence[dict[str, Any]]):
    """Rows of tasks; index by position for a row or by name for a column.

    A table is either a list of row dicts or a lazy view of a range of a
    :class:`~rushpy.columns.RowColumns` (:meth:`over`): then a column decodes
    only what it needs and a row dict is built only when it is asked for.
    Both behave the same.

    Example:
        >>> table = await rush.fetch_finished_tasks()
        >>> table["y"]            # one column as a list
        >>> table.to_pandas()     # needs pandas

    """

    __slots__ = ("_columns", "_rows", "_source")

    def __init__(self, rows: Sequence[dict[str, Any]] = ()) -> None:
        """Wrap rows (dicts); columns are the union of their keys, in first-seen order."""
        self._rows: list[dict[str, Any]] | None = list(rows)
        self._source: tuple[RowColumns, int, int] | None = None
        seen: dict[str, None] = {}
        for row in self._rows:
            for name in row:
                seen.setdefault(name, None)
        self._columns: list[str] | None = list(seen)

    @classmethod
    def over(cls, source: RowColumns, start: int = 0, stop: int | None = None) -> Table:
        """A lazy table of rows ``start`` to ``stop`` of ``source`` (rows appended later are not in it).

        Args:
            source: The columnar rows.
            start: First row.
            stop: Row after the last (``None``: the rows ``source`` has now).

        """
        table = cls.__new__(cls)
        span = range(*slice(start, stop).indices(len(source)))
        table._rows = None
        table._columns = None
        table._source = (source, span.start, max(span.start, span.stop))
        return table

    def _all(self) -> list[dict[str, Any]]:
        # Materialised once, on the first call that needs every row as a dict.
        if self._rows is None:
            source, start, stop = self._source  # type: ignore[misc]  # set whenever _rows is None
            self._rows = source.rows(start, stop)
        return self._rows

    @property
    def columns(self) -> list[str]:
        """Column names in order."""
        if self._columns is None:
            source, start, stop = self._source  # type: ignore[misc]  # set whenever _columns is None
            self._columns = source.columns(start, stop)
        return list(self._columns)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The rows (a copy of the list; the dicts are shared)."""
        return list(self._all())

    @property
    def keys(self) -> list[str]:
        """Task keys in row order."""
        if self._rows is None:
            source, start, stop = self._source  # type: ignore[misc]  # set whenever _rows is None
            return source.keys(start, stop)
        return [row["key"] for row in self._rows]

    def __len__(self) -> int:
        if self._rows is None:
            _, start, stop = self._source  # type: ignore[misc]  # set whenever _rows is None
            return stop - start
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> Table: ...
    @overload
    def __getitem__(self, index: str) -> list[Any]: ...

    def __getitem__(self, index: int | slice | str) -> Any:
        """Row by position, sub-table by slice, or column (missing cells are ``None``)."""
        if isinstance(index, str):
            columns = self.columns
            if index not in columns:
                raise KeyError(f"no column {index!r}; columns are {columns}")
            if self._rows is None:
                source, start, stop = self._source  # type: ignore[misc]  # set whenever _rows is None
                return source.column(index, start, stop)
            return [row.get(index) for row in self._rows]
        if self._rows is None:
            source, start, stop = self._source  # type: ignore[misc]  # set whenever _rows is None
            if isinstance(index, slice):
                if index.step not in (None, 1):
                    return Table(self._all()[index])
                span = range(stop - start)[index]
                return Table.over(source, start + span.start, start + max(span.start, span.stop))
            return source.row(start + range(stop - start)[index])
        if isinstance(index, slice):
            return Table(self._rows[index])
        return self._rows[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Table):
            return self._all() == other._all()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Table({len(self)} rows, columns={self.columns})"

    def to_records(self) -> list[dict[str, Any]]:
        """Rows with every column present (missing cells ``None``)."""
        columns = self.columns
        return [{c: row.get(c) for c in columns} for row in self._all()]

    def to_pandas(self) -> pandas.DataFrame:
        """Convert to a pandas DataFrame (``pip install pandas``)."""
        try:
            import pandas as pd  # noqa: PLC0415 - optional dependency
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("Table.to_pandas() needs pandas: pip install pandas") from exc
        return pd.DataFrame.from_records(self.to_records(), columns=self.columns)

    def to_polars(self) -> polars.DataFrame:
        """Convert to a polars DataFrame (``pip install polars``)."""
        try:
            import polars as pl  # noqa: PLC0415 - optional dependency
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("Table.to_polars() needs polars: pip install polars") from exc
        if not len(self):
            return pl.DataFrame()
        return pl.from_dicts(self.to_records(), infer_schema_length=None)

    def format(self, max_rows: int = 20, columns: Sequence[str] | None = None) -> str:
        """Render as a plain-text table (for printing in terminals and demos)."""
        cols = list(columns) if columns is not None else self.columns
        # A lazy table builds only the rows it shows.
        shown = self._rows[:max_rows] if self._rows is not None else list(self[:max_rows])
        cells = [[_cell(row.get(c)) for c in cols] for row in shown]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
        if len(self) > max_rows:
            lines.append(f"... {len(self) - max_rows} more rows")
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dt.datetime):
        return value.strftime("%H:%M:%S.%f")[:-3]
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."
