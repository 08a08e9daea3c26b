"""msgpack encoding of task values.

Supported beyond msgpack's own types (None, bool, int, float, str, bytes, lists,
tuples, mappings): timezone-aware and naive ``datetime``, ``date``,
``timedelta``, ``Decimal``, numpy arrays and numpy scalars (when numpy is
installed). No pickle is ever used. Anything else raises :class:`TaskError`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import sys
from typing import Any

import msgpack  # type: ignore[import-untyped]

from rushpy.errors import TaskError

__all__ = ["decode", "encode"]

_EXT_NAIVE_DATETIME = 1
_EXT_DATE = 2
_EXT_TIMEDELTA = 3
_EXT_DECIMAL = 4
_EXT_NDARRAY = 5


def _default(obj: Any) -> Any:
    if isinstance(obj, dt.datetime):
        # Aware datetimes are handled natively (datetime=True); only naive ones reach here.
        return msgpack.ExtType(_EXT_NAIVE_DATETIME, obj.isoformat().encode())
    if isinstance(obj, dt.date):
        return msgpack.ExtType(_EXT_DATE, obj.isoformat().encode())
    if isinstance(obj, dt.timedelta):
        return msgpack.ExtType(_EXT_TIMEDELTA, msgpack.packb([obj.days, obj.seconds, obj.microseconds]))
    if isinstance(obj, decimal.Decimal):
        return msgpack.ExtType(_EXT_DECIMAL, str(obj).encode())
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                return obj.tolist()
            arr = np.ascontiguousarray(obj)
            payload = msgpack.packb([arr.dtype.str, list(obj.shape), arr.tobytes()])
            return msgpack.ExtType(_EXT_NDARRAY, payload)
        if isinstance(obj, np.generic):
            value = obj.item()
            # datetime64/timedelta64 scalars become datetime/date/timedelta, which
            # msgpack does not pass back through this hook: convert them here.
            return _default(value) if isinstance(value, (dt.date, dt.timedelta)) else value
    if isinstance(obj, int):
        raise TaskError(
            f"cannot encode integer {obj}: it is outside the 64-bit range msgpack stores; "
            "store it as a string or a float"
        )
    if isinstance(obj, (set, frozenset)):
        try:
            return sorted(obj)
        except TypeError:  # mixed types: any stable order will do
            return sorted(obj, key=repr)
    raise TaskError(
        f"cannot encode value {obj!r} of type {type(obj).__name__}: task values must be "
        "None, bool, int, float, str, bytes, lists, mappings, datetimes, Decimal or numpy "
        "arrays; convert it to one of these first"
    )


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_NAIVE_DATETIME:
        return dt.datetime.fromisoformat(data.decode())
    if code == _EXT_DATE:
        return dt.date.fromisoformat(data.decode())
    if code == _EXT_TIMEDELTA:
        days, seconds, micros = msgpack.unpackb(data)
        return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
    if code == _EXT_DECIMAL:
        return decimal.Decimal(data.decode())
    if code == _EXT_NDARRAY:
        import numpy as np  # noqa: PLC0415 - optional; only needed when an array was stored

        dtype, shape, raw = msgpack.unpackb(data)
        return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()
    return msgpack.ExtType(code, data)


def encode(value: Any) -> bytes:
    """Encode one value with msgpack.

    Raises:
        TaskError: the value (or something inside it) has an unsupported type.

    """
    try:
        packed: bytes = msgpack.packb(value, default=_default, datetime=True, use_bin_type=True)
        return packed
    except (TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, TaskError):
            raise
        raise TaskError(f"cannot encode value {value!r:.80}: {exc}") from exc


def decode(data: bytes) -> Any:
    """Decode one value written by :func:`encode`.

    Mappings with tuple keys were written with list keys; they are read back with
    tuple keys (a slower path taken only for them).
    """
    try:
        return msgpack.unpackb(data, ext_hook=_ext_hook, timestamp=3, raw=False, strict_map_key=False)
    except TypeError:
        value = msgpack.unpackb(
            data,
            ext_hook=_ext_hook,
            timestamp=3,
            raw=False,
            strict_map_key=False,
            object_pairs_hook=_pairs_with_tuple_keys,
            list_hook=tuple,
        )
        return _lists(value)


def _lists(value: Any) -> Any:
    # With list_hook=tuple every array arrives as a tuple; values go back to lists.
    if isinstance(value, tuple):
        return [_lists(v) for v in value]
    return value


def _pairs_with_tuple_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    return {k: _lists(v) for k, v in pairs}
