"""Finished tasks as packed rows: one value in the network's rows hash per task.

A task that finishes leaves its own Redis hash: ``complete.lua`` (and
``create.lua`` for tasks created finished) packs its fields into one msgpack
value, stores it under the task's key in :attr:`rushpy.keys.Keys.rows`, and
deletes the hash. A Redis key costs about 150 bytes of bookkeeping of its own;
a field of one large hash costs about 50, so a small finished task takes about
200 bytes instead of 350 (docs/performance.md), and a read of many finished
tasks fetches one value per task instead of one reply per field.

A row is a msgpack array: the value of each field of :data:`ROW_SLOTS` in that
order (``False``: absent; trailing absent fields left out), then any other field
as a name, value pair. Values are the field's stored bytes (msgpack themselves),
exactly as they were in the hash, so a row reads back as the same flat
``HGETALL``-style list and everything that decodes task hashes
(:mod:`rushpy.fields`, :mod:`rushpy.columns`) reads rows unchanged. The scripts'
prelude (``pack_row``) writes rows and must agree with this module; a test
checks that both list the same slots.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack  # type: ignore[import-untyped]

__all__ = ["ROW_SLOTS", "UNREADABLE", "flat_of", "pack_row", "unpack_row", "unpack_rows"]

ROW_SLOTS = (
    "xs",
    "ys",
    "worker_id",
    "created_at",
    "started_at",
    "finished_at",
    "attempts",
    "claim",
    "xs_extra",
    "ys_extra",
    "seed",
    "timeout",
    "max_retries",
    "conditions",
    "done",
)
"""Fields with a fixed place in a row, most common first."""

_NAMES = tuple(name.encode() for name in ROW_SLOTS)
_NSLOTS = len(ROW_SLOTS)
UNREADABLE = b"row"
"""Field name under which an unreadable row is shown (its bytes never decode), so
the task reads as damaged, naming this field, and every other task reads normally."""
_NOT_MSGPACK = b"\xc1"  # the one byte msgpack never uses: the value cannot decode


def unpack_row(blob: bytes) -> list[bytes]:
    """The flat ``[name, value, ...]`` list of a packed row.

    A row that cannot be read (written by something other than rushpy) comes
    back as one field :data:`UNREADABLE` whose value does not decode, so
    :func:`rushpy.fields.decode_task` reports the task as damaged.
    """
    try:
        items = msgpack.unpackb(blob, raw=True, use_list=True)
    except Exception:  # any garbage: one damaged task, never a failed read
        return _unreadable(blob)
    if type(items) is not list or (len(items) > _NSLOTS and (len(items) - _NSLOTS) % 2):
        return _unreadable(blob)
    flat: list[bytes] = []
    for name, value in zip(_NAMES, items, strict=False):
        if value is not False:
            if type(value) is not bytes:
                return _unreadable(blob)
            flat += (name, value)
    extra = items[_NSLOTS:]
    for i in range(0, len(extra), 2):
        name, value = extra[i], extra[i + 1]
        if type(name) is not bytes or type(value) is not bytes:
            return _unreadable(blob)
        flat += (name, value)
    return flat


def _unreadable(blob: bytes) -> list[bytes]:
    """A row that cannot be read, as one field that never decodes (its first bytes kept for the error)."""
    return [UNREADABLE, _NOT_MSGPACK + bytes(blob[:64])]


_unpack_raw = functools.partial(msgpack.unpackb, raw=True)


def unpack_rows(blobs: Sequence[bytes]) -> tuple[list[tuple[type, ...] | None], list[Any]]:
    """Many packed rows at once: per row, which slots it fills and its values.

    The usual row (slots of :data:`ROW_SLOTS` only, no other field) comes back
    as the types of its values (``bytes`` for a field it has, ``bool`` for one it
    lacks: ``False``) and its list of values, decoded and checked in bulk in C.
    Any other row comes back as ``None`` and its flat list (:func:`unpack_row`),
    which also turns an unreadable row into a damaged one.
    """
    try:
        items = list(map(_unpack_raw, blobs))
        lengths = list(map(len, items))
    except Exception:  # some row is not msgpack (or not a container): row by row
        return [None] * len(blobs), [unpack_row(b) for b in blobs]
    shapes: list[tuple[type, ...] | None] = []
    out: list[Any] = []
    at = 0
    for n, group in itertools.groupby(lengths):
        size = sum(1 for _ in group)
        run = items[at : at + size]
        found = _slot_types(run, n)
        if found is None:  # extra fields or bad data: row by row
            shapes += [None] * size
            out += [unpack_row(b) for b in blobs[at : at + size]]
        else:
            shapes += found
            out += run
        at += size
    return shapes, out


def _slot_types(run: list[Any], n: int) -> list[tuple[type, ...]] | None:
    """Per row of ``run`` (unpacked values, each ``n`` long), the types of its slots.

    ``None`` unless every row holds slots only (bytes, or ``False`` for a field it lacks).
    """
    if not 0 < n <= _NSLOTS or set(map(type, run)) != {list}:
        return None
    kinds = set(map(type, itertools.chain.from_iterable(run)))
    if kinds == {bytes}:
        return [(bytes,) * n] * len(run)  # every slot filled: the common case, no per-row work
    if kinds == {bytes, bool} and True not in itertools.chain.from_iterable(run):
        return list(map(tuple, map(functools.partial(map, type), run)))
    return None


def flat_of(item: Any) -> Any:
    """One task as read by ``read.lua`` or ``lookup.lua``, with a row made flat.

    The scripts answer ``[row]`` (a one-item list) for a finished task; every
    other answer (a flat ``HGETALL`` reply, always of even length, or a type
    name) passes through unchanged.
    """
    if type(item) is list and len(item) == 1:
        return unpack_row(item[0])
    return item


def pack_row(fields: Mapping[str, bytes]) -> bytes:
    """The row of a task's stored fields (for restoring an archive); as ``pack_row`` in Lua."""
    row: list[Any] = [False] * _NSLOTS
    used = 0
    extra: list[bytes] = []
    for name, value in fields.items():
        try:
            slot = ROW_SLOTS.index(name)
        except ValueError:
            extra += (name.encode(), bytes(value))
            continue
        row[slot] = bytes(value)
        used = max(used, slot + 1)
    out: Sequence[Any] = row + extra if extra else row[:used]
    return bytes(msgpack.packb(out, use_bin_type=False))
