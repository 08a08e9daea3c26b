"""A columnar store of task rows: compact in memory, decoded only when read.

The controller caches every finished task it has read. Kept as one dict per
row (:func:`rushpy.table.flatten_task`), a small task costs 0.5 to 1.5 KB of
RAM: datetimes, dict overhead, a 32-character key string. :class:`RowColumns`
keeps the same rows in a few flat arrays instead (about 80 bytes per small row,
see ``benchmarks/columns.py``):

- the task key packed in a ``bytearray``: 12 bytes for the 16 base64url
  characters rushpy makes, 16 for the 32 hex characters of earlier versions
  (the format of the first key appended); any other key is kept aside;
- ``created_at``, ``started_at`` and ``finished_at`` as their 10 stored bytes
  (64-bit msgpack timestamps), turned into datetimes exactly as msgpack does
  when read (a float of seconds could be one microsecond off);
- ``worker_id`` as a code into the list of distinct worker ids;
- every other field the row shows (``xs``, ``ys``, the extras, ``condition``,
  ``attempts``, ...) as its stored msgpack bytes, one msgpack array per row in
  one ``bytearray``, decoded only when a row or a column is asked for;
- a *shape* per row: which fields it has and the names in each group, shared
  by every row of the same shape, so column names and name clashes
  (``ys.key``) are worked out once per shape, not once per row.

Each field is checked once when the row is appended (the same checks as
:func:`rushpy.fields.decode_task`; consecutive hashes with the same fields are
checked column by column in bulk, see :mod:`rushpy.column_batch`), so a row is either fully
valid or *odd*: damaged (bad msgpack, wrong type, a key that is not a hash),
with an unusual timestamp encoding, or with field names that are not UTF-8.
Odd rows are rare and kept as the row dict :func:`~rushpy.table.flatten_task`
gives, which makes every row equal to what the dict cache returned.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Callable, Sequence
from typing import Any, cast

from rushpy.codec import decode
from rushpy.column_batch import (
    NO_TIME,
    TIMES,
    TS64,
    TS_LEN,
    Layout,
    Shape,
    array_header,
    check_run,
    gc_paused,
    pick,
    tokens_ok,
)
from rushpy.column_parts import KeyColumn, TimeColumns, WorkerColumn
from rushpy.fields import check_field, decode_task
from rushpy.stored_rows import ROW_SLOTS, flat_of, unpack_rows
from rushpy.table import flatten_task

__all__ = ["RawHash", "RowColumns"]

RawHash = Sequence[bytes] | bytes | None
"""One task as ``read.lua`` returns it: the flat ``HGETALL`` reply, a type name, or nothing."""

_TS32 = b"\xd6\xff"
_TS32_LEN = 6


class RowColumns:
    """Task rows of one state, stored column by column; rows are decoded on demand.

    Rows are only ever appended (the finished list is append-only), so a range
    ``[start, stop)`` read once stays the same: a lazy
    :class:`~rushpy.table.Table` over it needs no copy.

    Args:
        state: The state every row shows in its ``state`` column.

    Example:
        >>> cols = RowColumns("finished")
        >>> cols.append(keys, await store.reads.read_raw(keys))
        >>> cols.rows(0, 10)          # dicts, equal to flatten_task(...)
        >>> Table.over(cols)["y"]     # decodes only what the column needs

    """

    def __init__(self, state: str) -> None:
        """Start with no rows."""
        self.state = state
        self._n = 0
        self._keys = KeyColumn()
        # The 10 stored bytes of each timestamp (a 64-bit msgpack timestamp), decoded when read.
        self._times = TimeColumns()
        self._memo: dict[tuple[str, bytes], bool] = {}
        self._wids = WorkerColumn()
        self._shape_ids = array("i")
        self._shapes: list[Shape] = []
        self._shape_index: dict[tuple[Any, ...], int] = {}
        self._layouts: dict[tuple[bytes, ...], Layout | None] = {}
        self._packed: dict[tuple[type, ...], Layout] = {}
        self._blob = bytearray()
        self._ends = array("q")
        self._odd: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return self._n

    @property
    def n_odd(self) -> int:
        """Rows kept as dicts (damaged or unusual data); every other row is columnar."""
        return len(self._odd)

    def append(self, keys: Sequence[str], hashes: Sequence[RawHash]) -> int:
        """Add the tasks ``read.lua`` returned for ``keys``; returns how many rows were added.

        Args:
            keys: Task keys, in row order.
            hashes: Per key, the flat ``HGETALL`` reply (name, value, ...), the
                Redis type name (bytes) of a key that is not a hash, or ``None``
                or an empty reply for a task that is gone (no row).

        Raises:
            ValueError: ``keys`` and ``hashes`` differ in length.

        """
        if len(keys) != len(hashes):
            raise ValueError(f"got {len(keys)} keys but {len(hashes)} hashes; pass one hash per key")
        pairs = [(k, h) for k, h in zip(keys, hashes, strict=True) if h]  # gone: no row
        flats = [h for _, h in pairs]
        layouts = [None if isinstance(h, bytes) else self._layout(h) for h in flats]
        with gc_paused():
            return self._append_tasks([k for k, _ in pairs], flats, layouts, flats.__getitem__)

    def append_rows(self, keys: Sequence[str], rows: Sequence[bytes]) -> int:
        """Add finished tasks stored as packed rows (:mod:`rushpy.stored_rows`), one per key.

        The usual rows (fields of :data:`~rushpy.stored_rows.ROW_SLOTS` only) are
        checked and stored column by column without being made flat; any other
        row is made flat first, and an unreadable one becomes a damaged row, as
        in :meth:`append`.

        Raises:
            ValueError: ``keys`` and ``rows`` differ in length.

        """
        if len(keys) != len(rows):
            raise ValueError(f"got {len(keys)} keys but {len(rows)} rows; pass one row per key")
        with gc_paused():
            return self._append_packed(list(keys), rows)

    def _append_packed(self, keys: list[str], rows: Sequence[bytes]) -> int:
        shapes, items = unpack_rows(rows)
        packed = {shape: self._packed_layout(shape) for shape in set(shapes) if shape is not None}
        layouts = list(map(cast("Callable[[Any], Layout | None]", packed.get), shapes))
        if None in shapes:  # rows with other fields were made flat: their layout by name
            layouts = [
                self._layout(item) if shape is None else layout
                for shape, item, layout in zip(shapes, items, layouts, strict=True)
            ]

        def original(i: int) -> Any:
            # A row that fails its checks is decoded again (flat) to name the bad field.
            return items[i] if shapes[i] is None else [rows[i]]

        return self._append_tasks(keys, items, layouts, original)

    def _append_tasks(
        self,
        keys: list[str],
        items: list[Any],
        layouts: list[Layout | None],
        original: Callable[[int], Any],
    ) -> int:
        """Append tasks read as ``items`` with their ``layouts`` (``None``: kept as a dict).

        ``original(i)`` is what :func:`~rushpy.stored_rows.flat_of` turns into
        the flat reply :func:`rushpy.fields.decode_task` reads, for a row kept as a dict.
        """
        first = self._n
        tokens: list[bytes] = []  # unknown fields of rows appended one by one, checked at the end
        at = 0
        # Runs of consecutive tasks with one layout are checked column by column, in bulk.
        for _, group in itertools.groupby(layouts, key=id):
            size = len(list(group))
            layout = layouts[at]
            run = range(at, at + size)
            at += size
            # A layout (not None) means these are tasks (not type names).
            if layout is not None and self._append_run(items[run.start : run.stop], layout):
                continue
            for i in run:
                if layout is None or not self._append_fast(items[i], layout, tokens):
                    self._append_odd(keys[i], original(i))
        self._keys.push(first, keys)
        if not tokens_ok(tokens) or not self._times.all_ok_from(first, self._n - first):
            self._recheck(first, keys, items, original)
        return self._n - first

    def _packed_layout(self, shape: tuple[type, ...]) -> Layout:
        """The layout of packed rows whose slots hold values of types ``shape`` (``bytes``: a field)."""
        layout = self._packed.get(shape)
        if layout is None:
            slots = [i for i, kind in enumerate(shape) if kind is bytes]
            layout = self._packed[shape] = Layout([ROW_SLOTS[i] for i in slots], slots)
        return layout

    def _layout(self, flat: Sequence[bytes]) -> Layout | None:
        names = tuple(flat[0::2])
        try:
            return self._layouts[names]
        except KeyError:
            pass
        layout: Layout | None
        try:
            layout = Layout([name.decode() for name in names])
        except UnicodeDecodeError:
            layout = None  # decode_task names the field
        self._layouts[names] = layout
        return layout

    def _shape_id(self, layout: Layout, names: Sequence[tuple[Any, ...]]) -> int:
        signature = (id(layout), *names)
        sid = self._shape_index.get(signature)
        if sid is None:
            sid = self._shape_index[signature] = len(self._shapes)
            self._shapes.append(Shape(layout, names))
        return sid

    def _append_run(self, flats: Sequence[Sequence[bytes]], layout: Layout) -> bool:
        """Append hashes of one layout in bulk; ``False`` (nothing changed) if one needs a closer look."""
        run = check_run(flats, layout, self._memo)
        if run is None:
            return False
        codes = [-1] * len(flats)
        if layout.wid >= 0:
            code_of = {raw: self._wids.code(raw) for raw in set(run.wids)}  # a few workers, many rows
            if -1 in code_of.values():
                return False
            codes = list(map(code_of.__getitem__, run.wids))
        # Rows are appended column by column (zip(*...) turns columns into rows).
        per_row = list(zip(*run.names, strict=True)) if run.names else [()] * len(flats)
        shape_of = {names: self._shape_id(layout, names) for names in set(per_row)}
        self._times.extend(run.times)
        self._wids.codes.extend(codes)
        self._shape_ids.extend(map(shape_of.__getitem__, per_row))
        header = array_header(len(layout.stored))
        segments = (
            [header + b"".join(raws) for raws in zip(*run.stored, strict=True)]
            if run.stored
            else [header] * len(flats)
        )
        ends = itertools.accumulate(map(len, segments), initial=len(self._blob))
        next(ends)  # the initial value: the previous row's end
        self._ends.extend(ends)
        self._blob += b"".join(segments)
        self._n += len(flats)
        return True

    def _append_fast(self, flat: Sequence[bytes], layout: Layout, tokens: list[bytes]) -> bool:
        """Append one task of ``layout`` in columns; ``False`` (nothing changed) when it must be a dict.

        Timestamps must be 64-bit msgpack timestamps (32-bit ones are widened);
        their tag and range, and the unknown fields (``claim``, ``done``: short
        strings), are checked for the whole batch afterwards (:meth:`append`).
        """
        vals = flat
        times: list[bytes] = []
        for p in layout.times:
            raw = vals[p] if p >= 0 else NO_TIME
            if len(raw) != TS_LEN:
                if len(raw) != _TS32_LEN or raw[:2] != _TS32:
                    return False  # another encoding (naive datetime, 96 bits, float...): keep as a dict
                raw = TS64 + raw[2:].rjust(8, b"\0")  # the same instant, whole seconds
            times.append(raw)
        names: list[tuple[Any, ...]] = []
        try:
            for name, p in zip(layout.stored, layout.stored_pos, strict=True):
                value = decode(vals[p])
                if check_field(name, value) is not None:
                    return False
                names.append(tuple(value) if type(value) is dict else ())
        except Exception:  # any decoder failure is bad data: the dict path names it
            return False
        code = self._wids.code(vals[layout.wid]) if layout.wid >= 0 else -1
        if code < 0 <= layout.wid:
            return False
        sid = self._shape_id(layout, names)
        tokens.extend(vals[p] for p in layout.checked)
        self._times.extend(times)
        self._wids.codes.append(code)
        self._shape_ids.append(sid)
        self._blob += array_header(len(layout.stored)) + b"".join([vals[p] for p in layout.stored_pos])
        self._ends.append(len(self._blob))
        self._n += 1
        return True

    def _append_odd(self, key: str, original: Any) -> None:
        self._odd[self._n] = flatten_task(key, self.state, decode_task(flat_of(original)))
        self._times.add_absent()
        self._wids.codes.append(-1)
        self._shape_ids.append(-1)
        self._blob += array_header(0)  # keeps one msgpack array per row for range decoding
        self._ends.append(len(self._blob))
        self._n += 1

    def _recheck(self, first: int, keys: list[str], items: list[Any], original: Callable[[int], Any]) -> None:
        """Turn rows of the batch from ``first`` whose timestamps or unknown fields are bad into dicts."""
        for j, (i, key, vals) in enumerate(zip(range(first, self._n), keys, items, strict=True)):
            sid = self._shape_ids[i]
            if sid < 0:
                continue  # already a dict
            layout = self._shapes[sid].layout
            ok = all(self._times.ok(i, k) for k in range(3) if layout.times[k] >= 0)
            try:
                for p in layout.checked:
                    decode(vals[p])
            except Exception:  # any decoder failure is bad data
                ok = False
            if not ok:
                self._shape_ids[i] = -1
                self._odd[i] = flatten_task(key, self.state, decode_task(flat_of(original(j))))

    def _range(self, start: int, stop: int | None) -> range:
        return range(*slice(start, stop).indices(self._n))

    def key(self, i: int) -> str:
        """Task key of row ``i``."""
        return self._keys.key(i)

    def keys(self, start: int = 0, stop: int | None = None) -> list[str]:
        """Task keys of rows ``start`` to ``stop``, in row order."""
        return self._keys.keys(self._range(start, stop))

    def _stored(self, r: range) -> list[list[Any]]:
        """The stored fields of every row in ``r``, decoded in one call (one list per row)."""
        if not r:
            return []
        first = self._ends[r.start - 1] if r.start else 0
        body = self._blob[first : self._ends[r.stop - 1]]
        values: list[list[Any]] = decode(bytes(array_header(len(r))) + body)
        return values

    def columns(self, start: int = 0, stop: int | None = None) -> list[str]:
        """Column names of rows ``start`` to ``stop``: their union in first-seen order."""
        r = self._range(start, stop)
        ids = self._shape_ids
        # Each shape counts from its first row (found in C); odd rows are few.
        firsts = [
            (ids.index(sid, r.start, r.stop), sid) for sid in dict.fromkeys(ids[r.start : r.stop]) if sid >= 0
        ]
        firsts += [(i, -1) for i in self._odd if r.start <= i < r.stop]
        seen: dict[str, None] = {}
        for i, sid in sorted(firsts):
            seen.update(dict.fromkeys(self._odd[i] if sid < 0 else self._shapes[sid].columns))
        return list(seen)

    def rows(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """Rows ``start`` to ``stop`` as dicts, equal to what :func:`flatten_task` gives."""
        r = self._range(start, stop)
        return [self._row(i, stored) for i, stored in zip(r, self._stored(r), strict=True)]

    def row(self, i: int) -> dict[str, Any]:
        """Row ``i`` (negative counts from the end) as a dict."""
        at = i + self._n if i < 0 else i
        if not 0 <= at < self._n:
            raise IndexError(f"row {i} out of range for {self._n} rows")
        return self.rows(at, at + 1)[0]

    def _row(self, i: int, stored: list[Any]) -> dict[str, Any]:
        sid = self._shape_ids[i]
        if sid < 0:
            return dict(self._odd[i])  # a copy: the cache's dict stays as read
        layout = self._shapes[sid].layout
        task: dict[str, Any] = dict(zip(layout.stored, stored, strict=True))
        for k, name in enumerate(TIMES):
            if layout.times[k] >= 0:
                task[name] = self._times.at(i, k)
        if layout.wid >= 0:
            task["worker_id"] = self._wids.at(i)
        return flatten_task(self.key(i), self.state, task)

    def column(self, name: str, start: int = 0, stop: int | None = None) -> list[Any]:
        """One column of rows ``start`` to ``stop`` (``None`` where a row lacks it).

        No row dict is built, and of each row's stored fields only the one
        holding the column is decoded (the others are skipped).
        """
        r = self._range(start, stop)
        sources = [s.sources.get(name) for s in self._shapes]
        wanted = [s[1] if s is not None and s[0] == "b" else None for s in sources]
        picked = self._picked(r, wanted) if any(j is not None for j in wanted) else None
        out: list[Any] = []
        for n, i in enumerate(r):
            sid = self._shape_ids[i]
            if sid < 0:
                out.append(self._odd[i].get(name))
                continue
            src = sources[sid]
            if src is None:
                out.append(None)
                continue
            kind, j, entry = src
            if kind == "b":
                value: Any = picked[n] if picked is not None else None
                out.append(value if entry is None else value[entry])
            elif kind == "t":
                out.append(self._times.at(i, j))
            elif kind == "w":
                out.append(self._wids.at(i))
            elif kind == "k":
                out.append(self.key(i))
            elif kind == "s":
                out.append(self.state)
            else:
                out.append(None)
        return out

    def _picked(self, r: range, wanted: list[int | None]) -> list[Any]:
        """Per row of ``r``, its stored field number ``wanted[shape]`` decoded, the others skipped."""
        first = self._ends[r.start - 1] if r.start else 0
        body = bytes(self._blob[first : self._ends[r.stop - 1]]) if r else b""
        fields = [wanted[sid] if sid >= 0 else None for sid in self._shape_ids[r.start : r.stop]]
        try:
            return pick(body, fields)
        except TypeError:  # a mapping with list keys: decode's slower path, for every row
            return [None if j is None else row[j] for j, row in zip(fields, self._stored(r), strict=True)]
