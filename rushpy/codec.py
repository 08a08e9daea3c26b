"""msgpack encoding of task values.

Supported beyond msgpack's own types (None, bool, int, float, str, bytes, lists,
tuples, mappings): timezone-aware and naive ``datetime``, ``date``,
``timedelta``, ``Decimal``, numpy arrays and numpy scalars (when numpy is
installed). No pickle is ever used.

A value must come back as it went in, so what msgpack would silently change is
refused with :class:`TaskError` naming the field (``xs['x']``): sets and
frozensets (they would come back as lists), numpy arrays of Python objects
(they would come back as lists), structured numpy arrays and their records
(they would lose their fields), masked arrays (they would lose their mask),
and every other type. Two documented
exceptions: tuples come back as lists (msgpack has one array type), and numpy
scalars come back as the equal Python scalar.
"""

from __future__ import annotations

import datetime as dt
import decimal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack  # type: ignore[import-untyped]

from rushpy.errors import TaskError

__all__ = ["ObjectRef", "decode", "encode", "ext_hook"]

_EXT_NAIVE_DATETIME = 1
_EXT_DATE = 2
_EXT_TIMEDELTA = 3
_EXT_DECIMAL = 4
_EXT_NDARRAY = 5
_EXT_OBJECT_REF = 16


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """A task input stored once as a large object, in place of its value (see ``rushpy.store.objects``).

    Attributes:
        digest: SHA-256 (hex) of the value's msgpack bytes: the object's name.
        size: Size of those bytes.

    """

    digest: str
    size: int

    def __repr__(self) -> str:
        return f"<large object sha256:{self.digest[:12]} of {self.size:,} bytes>"


def _default(obj: Any) -> Any:
    if isinstance(obj, ObjectRef):
        return msgpack.ExtType(_EXT_OBJECT_REF, msgpack.packb([obj.digest, obj.size]))
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
            _refuse_lossy_array(np, obj)
            if obj.dtype.hasobject:
                raise TaskError(
                    f"is a numpy array of Python objects (dtype {obj.dtype}), which would come back "
                    "as a list; convert it to a numeric or string dtype, or pass obj.tolist()"
                )
            arr = np.ascontiguousarray(obj)
            payload = msgpack.packb([arr.dtype.str, list(obj.shape), arr.tobytes()])
            return msgpack.ExtType(_EXT_NDARRAY, payload)
        if isinstance(obj, np.generic):
            if obj.dtype.names is not None:
                # A record (one element of a structured array): .item() is a bare tuple.
                raise TaskError(
                    f"is a structured numpy value with fields {', '.join(obj.dtype.names)}, which "
                    "would come back as a list without its field names; pass a mapping of its fields"
                )
            value = obj.item()
            # datetime64/timedelta64 scalars become datetime/date/timedelta, which
            # msgpack does not pass back through this hook: convert them here.
            return _default(value) if isinstance(value, (dt.date, dt.timedelta)) else value
    if isinstance(obj, int):
        raise TaskError(
            f"is the integer {obj}, outside the 64-bit range msgpack stores; store it as a string or a float"
        )
    if isinstance(obj, (set, frozenset)):
        # Storing a set as a list would hand back a different type: refuse instead.
        raise TaskError(
            f"is a {type(obj).__name__} {obj!r:.80}, which would come back as a list; "
            "pass sorted(...) (a list) or a mapping instead"
        )
    raise TaskError(
        f"is {obj!r:.80} of type {type(obj).__name__}: task values must be None, bool, int, "
        "float, str, bytes, lists, mappings, datetimes, Decimal or numpy arrays; convert it first"
    )


def _refuse_lossy_array(np: Any, obj: Any) -> None:
    """Refuse arrays whose bytes alone do not say what they are: masked and structured ones."""
    if isinstance(obj, np.ma.MaskedArray):
        # Only the data would be stored: the mask, and so which values are missing, would be lost.
        raise TaskError(
            "is a masked numpy array, which would come back without its mask; pass "
            "arr.filled(fill_value) (with NaN for missing floats), or the data and "
            "np.ma.getmaskarray(arr) as two arrays"
        )
    if obj.dtype.names is not None:
        # Only the raw bytes and a void dtype would be stored: the field names and types are lost.
        raise TaskError(
            f"is a structured numpy array with fields {', '.join(obj.dtype.names)}, which would "
            "come back as raw bytes without its fields; pass one array per field, e.g. "
            "{name: arr[name] for name in arr.dtype.names}"
        )


def ext_hook(code: int, data: bytes) -> Any:
    """Turn one of rushpy's msgpack extension types back into its value (for ``msgpack.unpackb``).

    Decoders other than :func:`decode` (the columnar cache) pass it so that
    they decode exactly as :func:`decode` does.
    """
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
    if code == _EXT_OBJECT_REF:
        digest, size = msgpack.unpackb(data)
        return ObjectRef(str(digest), int(size))
    return msgpack.ExtType(code, data)


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, default=_default, datetime=True, use_bin_type=True)
    return packed


def encode(value: Any, *, name: str = "value") -> bytes:
    """Encode one value with msgpack.

    Args:
        value: The value to encode.
        name: What the value is, for error messages (``"xs"``, ``"ys"``,
            ``"xss[3]"``): a refused element is named by its path from it,
            e.g. ``xs['x'][2]``.

    Raises:
        TaskError: the value (or something inside it) cannot be stored so that it
            comes back as it went in; the message names the element's path.

    """
    try:
        return _pack(value)
    except (TypeError, ValueError, OverflowError) as exc:
        # The slow path runs only on failure: find which element was refused.
        try:
            path, reason = _locate(value, name)
        except RecursionError:  # nested deeper than Python recurses: name the whole value
            path, reason = name, None
        if reason is None:
            reason = f"cannot be encoded ({exc})"
        raise TaskError(f"cannot encode value at {path}: it {reason}") from exc


def _locate(value: Any, path: str) -> tuple[str, str | None]:
    """Return the path of the first element that cannot be packed, and why."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _locate(key, f"{path} key {key!r:.40}")
            if found[1] is not None:
                return found
            found = _locate(item, f"{path}[{key!r:.40}]")
            if found[1] is not None:
                return found
        return path, None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _locate(item, f"{path}[{i}]")
            if found[1] is not None:
                return found
        return path, None
    try:
        _pack(value)
    except TaskError as exc:
        return path, str(exc)
    except (TypeError, ValueError, OverflowError) as exc:
        return path, f"cannot be encoded ({exc})"
    return path, None


def decode(data: bytes) -> Any:
    """Decode one value written by :func:`encode`.

    Mappings with tuple keys were written with list keys; they are read back with
    tuple keys (a slower path taken only for them).
    """
    try:
        return msgpack.unpackb(data, ext_hook=ext_hook, timestamp=3, raw=False, strict_map_key=False)
    except TypeError:
        value = msgpack.unpackb(
            data,
            ext_hook=ext_hook,
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
