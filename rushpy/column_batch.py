"""Layouts, shapes and bulk checks of task hashes, for :class:`rushpy.columns.RowColumns`.

Consecutive hashes read from Redis usually have the same field names in the
same order (a *layout*): every finished task of a network was written by the
same scripts. This module checks a run of such hashes field by field, one
column at a time, so that most of the work happens in C (``b"".join``, strided
slices, ``map``) instead of in Python code per row. The checks are those of
:func:`rushpy.fields.decode_task`; a run that fails any of them is handed back
(``None``) and its rows are appended one by one, which sorts out the bad ones.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack  # type: ignore[import-untyped]

from rushpy.codec import ext_hook
from rushpy.fields import check_field
from rushpy.table import ROW_FIELDS, flatten_task

__all__ = [
    "GROUPS",
    "STORED",
    "TIMES",
    "Layout",
    "Run",
    "Shape",
    "array_header",
    "check_run",
    "gc_paused",
    "pick",
    "times_ok",
    "tokens_ok",
    "unpack",
]

TIMES = ("created_at", "started_at", "finished_at")
STORED = tuple(name for name in ROW_FIELDS if name not in TIMES)
"""Fields kept as msgpack bytes, in the order they are stored per row: what a row shows
(:data:`rushpy.table.ROW_FIELDS`) but the timestamps."""

GROUPS = frozenset({"xs", "ys", "xs_extra", "ys_extra"})
_NAMED = GROUPS | {"condition"}  # mappings whose names make columns (condition: output relay)
TS64 = b"\xd7\xff"
TS_LEN = 10
NO_TIME = TS64 + bytes(8)
MAX_NS = (10**9 << 2).to_bytes(4, "big")
"""First 4 payload bytes of a 64-bit timestamp at 10**9 nanoseconds (msgpack refuses that and more)."""
_HIGH = re.compile(rb"[\xee-\xff]")  # first bytes of MAX_NS and above
_SCALARS = frozenset({int, float, str, bool, bytes, type(None)})
_TOKEN_LEN = 17
_MAX_FIX = 15
_TOKEN_TAG = b"\xb0"  # a 16-byte string

unpack = functools.partial(msgpack.unpackb, ext_hook=ext_hook, timestamp=3, raw=False, strict_map_key=False)
"""``rushpy.codec.decode`` without its fallback for list keys (which raises ``TypeError`` here)."""


class Layout:
    """Where each field's value is in a task with a given sequence of field names (one per sequence).

    Positions are indices of values in the sequence the task is read as: a flat
    ``HGETALL`` reply (``name, value, ...``: value ``i`` at ``2 * i + 1``, the
    default) or a packed row's list of values (:mod:`rushpy.stored_rows`: each
    field at its slot). Absent fields are at ``-1``.
    """

    __slots__ = ("checked", "stored", "stored_pos", "times", "wid")

    def __init__(self, names: Sequence[str], positions: Sequence[int] | None = None) -> None:
        """Index the fields of a task whose field names are ``names`` (values at ``positions``)."""
        at = range(1, 2 * len(names), 2) if positions is None else positions
        pos = dict(zip(names, at, strict=True))
        self.stored = tuple(name for name in STORED if name in pos)
        self.stored_pos = tuple(pos[name] for name in self.stored)
        self.times = tuple(pos.get(name, -1) for name in TIMES)
        self.wid = pos.get("worker_id", -1)
        known = {*STORED, *TIMES, "worker_id"}
        # Unknown fields are not shown, but a damaged one makes the row damaged.
        self.checked = tuple(pos[name] for name in names if name not in known)


class Shape:
    """Column names of rows with one layout and one set of names per group, and where each comes from.

    Built by flattening a symbolic task whose values say where the real value
    is, so clashes and output-relay columns follow :func:`flatten_task` exactly.
    """

    __slots__ = ("columns", "layout", "sources")

    def __init__(self, layout: Layout, names: Sequence[tuple[Any, ...]]) -> None:
        """Work out the columns of rows of ``layout`` whose mappings have ``names`` (per stored field)."""
        self.layout = layout
        task: dict[str, Any] = {}
        whole: dict[int, int] = {}  # id of a symbolic value -> stored index
        for j, (field, keys) in enumerate(zip(layout.stored, names, strict=True)):
            if field in GROUPS or field == "condition":
                value: Any = {k: ("b", j, k) for k in keys}
            else:
                value = ("b", j, None)
            whole[id(value)] = j
            task[field] = value
        for k, name in enumerate(TIMES):
            if layout.times[k] >= 0:
                task[name] = ("t", k, None)
        if layout.wid >= 0:
            task["worker_id"] = ("w", 0, None)
        row = flatten_task("", "", task)
        sources: dict[str, tuple[str, int, Any]] = {"key": ("k", 0, None), "state": ("s", 0, None)}
        for column, value in list(row.items())[2:]:
            if value is None:  # worker_id of a task without one
                sources[column] = ("n", 0, None)
            elif id(value) in whole:  # a whole stored field (condition, attempts, ...)
                sources[column] = ("b", whole[id(value)], None)
            else:
                sources[column] = value
        self.sources = sources
        self.columns = tuple(sources)


@dataclass(slots=True)
class Run:
    """A checked run of hashes of one layout, column by column.

    Attributes:
        times: Per timestamp field, the 10 stored bytes of every row, joined.
        stored: Per stored field, every row's raw value.
        names: Per stored field, every row's names (``()`` for non-mappings).
        wids: Every row's raw ``worker_id`` (empty when the layout has none).

    """

    times: list[bytes]
    stored: list[list[bytes]]
    names: list[list[tuple[Any, ...]]]
    wids: list[bytes]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a bulk decode (no ``await`` inside).

    Decoding a batch creates a list or a dict per row; every 700 such
    allocations start a collection, and an older generation's collection walks
    every object the cache already holds. Over a cold read of 10^6 rows that is
    most of the decoding time (``benchmarks/columns.py``). The objects made
    here hold no cycles, so nothing is left for the collector to find; it runs
    as usual once the batch is in.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def times_ok(joined: bytes | bytearray, n: int) -> bool:
    """Whether ``joined`` holds ``n`` 64-bit msgpack timestamps with nanoseconds in range."""
    if len(joined) != TS_LEN * n or joined[0::TS_LEN] != TS64[:1] * n or joined[1::TS_LEN] != TS64[1:] * n:
        return False
    # Nanoseconds are the top 30 bits of the payload: only a first byte of 0xEE or
    # more can be 10**9 or more, so only those few are compared in full.
    tops = joined[2::TS_LEN]
    for found in _HIGH.finditer(tops):
        k = found.start() * TS_LEN + 2
        if joined[k : k + 4] >= MAX_NS:
            return False
    return True


def tokens_ok(tokens: list[bytes]) -> bool:
    """Whether every value decodes, checked in C for the usual form: 16-character ASCII strings."""
    joined = bytearray(b"".join(tokens))
    if len(joined) != _TOKEN_LEN * len(tokens) or joined[0::_TOKEN_LEN] != _TOKEN_TAG * len(tokens):
        return False
    joined[0::_TOKEN_LEN] = b" " * len(tokens)  # the tags are not ASCII; the strings must be
    return joined.isascii()


def _mappings(raws: list[bytes]) -> list[Any]:
    """Decode every value as :func:`unpack` does, fast when they are mappings of plain scalars.

    ``msgpack.unpackb`` with its default options is about twice as fast as with
    rushpy's (which make it build an ``Unpacker`` per call). The two agree on
    mappings with string keys whose values are plain scalars: those need no
    extension hook, map-key leniency or timestamp conversion. Anything else
    is decoded again with rushpy's options.
    """
    try:
        values = list(map(msgpack.unpackb, raws))
    except Exception:  # non-string keys, extension types, bad data: decide with rushpy's options
        return list(map(unpack, raws))
    if set(map(type, values)) == {dict}:
        inner = set(map(type, itertools.chain.from_iterable(map(dict.values, values))))
        if inner <= _SCALARS:
            return values
    return list(map(unpack, raws))


def _named(name: str, raws: list[bytes]) -> list[tuple[Any, ...]] | None:
    """The names of every row's mapping, or ``None`` if one fails its check."""
    values = _mappings(raws)
    if name == "condition":
        if any(check_field(name, v) is not None for v in values):
            return None
    elif set(map(type, values)) != {dict}:
        return None
    names = list(map(tuple, values))
    if name != "ys":  # ys may have other keys (a worker loop's return value)
        for keys in set(names):
            if any(type(k) is not str for k in keys):
                return None
    return names


def check_run(
    flats: Sequence[Sequence[bytes]], layout: Layout, memo: dict[tuple[str, bytes], bool]
) -> Run | None:
    """Check a run of tasks of ``layout``; ``None`` when any row must be appended on its own.

    Args:
        flats: The tasks as read (flat ``HGETALL`` replies, or packed rows' values
            for a packed layout), all with the field names of ``layout``.
        layout: Their layout.
        memo: Checks of small values already done (``(field, raw)``: usable),
            kept by the caller across runs.

    """
    n = len(flats)
    times: list[bytes] = []
    for p in layout.times:
        joined = NO_TIME * n if p < 0 else b"".join([f[p] for f in flats])
        if not times_ok(joined, n):
            return None  # 32-bit or other encodings, or bad values: row by row
        times.append(joined)
    for p in layout.checked:
        if not tokens_ok([f[p] for f in flats]):
            return None
    stored: list[list[bytes]] = []
    names: list[list[tuple[Any, ...]]] = []
    try:
        for name, p in zip(layout.stored, layout.stored_pos, strict=True):
            raws = [f[p] for f in flats]
            if name in _NAMED:
                keys = _named(name, raws)
                if keys is None:
                    return None
                names.append(keys)
            else:
                for raw in set(raws):
                    ok = memo.get((name, raw))
                    if ok is None:
                        ok = check_field(name, unpack(raw)) is None
                        if len(raw) <= 2:  # small counts repeat; seeds and the like do not
                            memo[(name, raw)] = ok
                    if not ok:
                        return None
                names.append([()] * n)
            stored.append(raws)
    except Exception:  # any decoder failure (or list keys): row by row names the field
        return None
    wids = [f[layout.wid] for f in flats] if layout.wid >= 0 else []
    return Run(times, stored, names, wids)


def array_header(n: int) -> bytes:
    """The msgpack header of an array of ``n`` items."""
    if n <= _MAX_FIX:
        return bytes((0x90 + n,))
    return b"\xdd" + n.to_bytes(4, "big")


def pick(body: bytes, fields: Sequence[int | None]) -> list[Any]:
    """Per row (one msgpack array each in ``body``), its item number ``fields[row]``; the others are skipped.

    Raises:
        TypeError: a picked mapping has list keys (``rushpy.codec.decode`` handles those).

    """
    unpacker = msgpack.Unpacker(
        None, ext_hook=ext_hook, timestamp=3, raw=False, strict_map_key=False, max_buffer_size=len(body) + 1
    )
    unpacker.feed(body)
    out: list[Any] = []
    for j in fields:
        value = None
        for f in range(unpacker.read_array_header()):
            if f == j:
                value = unpacker.unpack()
            else:
                unpacker.skip()
        out.append(value)
    return out
