"""Encoding task fields for the store: size limits, and large values without copies.

:func:`rushpy.codec.encode` packs a value with msgpack, whose buffer grows by
doubling and is copied once more into the result: a 50 MB array costs about
4x its size at peak. For a field holding a large binary leaf (``bytes``,
``bytearray``, ``memoryview`` or a numpy array of at least
:data:`LARGE_VALUE` bytes) the store writes the same msgpack bytes from
pieces instead: small parts are packed by the codec, the large buffers are
referenced in place, and one join builds the result (one copy). The output is
byte-for-byte what :func:`~rushpy.codec.encode` produces (tested).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Mapping
from typing import Any

from rushpy.codec import encode
from rushpy.errors import TaskError

__all__ = ["LARGE_VALUE", "check_task_size", "encode_field"]

LARGE_VALUE = 1 << 20
"""Binary leaves of at least this many bytes are encoded without intermediate copies."""

# The codec's extension type of numpy arrays: [dtype.str, shape, raw bytes].
_EXT_NDARRAY = 5
_SCALARS = frozenset({int, float, str, bool, type(None)})
_BUFFERS = (bytes, bytearray, memoryview)


def encode_field(value: Any) -> bytes:
    """Encode one task field as :func:`rushpy.codec.encode` does, copying large leaves once."""
    if type(value) is dict:
        # Typical inputs are small mappings of scalars: one type check per value.
        for v in value.values():
            if type(v) not in _SCALARS and _has_large(v, 1):
                return _encode_pieces(value)
        return encode(value)
    if type(value) in _SCALARS or not _has_large(value, 0):
        return encode(value)
    return _encode_pieces(value)


def check_task_size(index: int, fields: Mapping[str, bytes], limit: int) -> None:
    """Raise if the encoded fields of task ``index`` exceed ``limit`` bytes together.

    Raises:
        TaskError: naming the task, its largest field, the size and the limit.

    """
    size = sum(len(v) for v in fields.values())
    if size > limit:
        largest = max(fields, key=lambda name: len(fields[name]))
        raise TaskError(
            f"task {index} is {size:,} bytes encoded ({largest!r} alone {len(fields[largest]):,}), "
            f"more than max_task_bytes={limit:,}; store large data elsewhere (a file or object "
            "store) and put its location in the task, or raise max_task_bytes on the Controller "
            "or Worker (at most 512 MB, the server's proto-max-bulk-len)"
        )


def _large_array(value: Any) -> bool:
    np = sys.modules.get("numpy")
    return (
        np is not None
        and isinstance(value, np.ndarray)
        and not value.dtype.hasobject
        and value.nbytes >= LARGE_VALUE
    )


def _has_large(value: Any, depth: int) -> bool:
    if isinstance(value, _BUFFERS):
        return _large_buffer(value)
    if depth < 4:
        if type(value) is dict:
            return any(_has_large(v, depth + 1) for v in value.values())
        if type(value) in (list, tuple) and len(value) <= 64:
            return any(_has_large(v, depth + 1) for v in value)
    return _large_array(value)


def _large_buffer(value: bytes | bytearray | memoryview) -> bool:
    if isinstance(value, memoryview):
        return value.c_contiguous and value.nbytes >= LARGE_VALUE
    return len(value) >= LARGE_VALUE


def _encode_pieces(value: Any) -> bytes:
    pieces: list[Any] = []
    _pieces(value, pieces, 0)
    return b"".join(pieces)


def _pieces(value: Any, out: list[Any], depth: int) -> None:
    # Mirrors msgpack's packing of containers; anything small goes to the codec.
    if depth < 4 and type(value) is dict:
        out.append(_header(len(value), 0x80, 16, 0xDE, 0xDF))
        for k, v in value.items():
            out.append(encode(k))
            _pieces(v, out, depth + 1)
    elif depth < 4 and type(value) in (list, tuple) and len(value) <= 64:
        out.append(_header(len(value), 0x90, 16, 0xDC, 0xDD))
        for v in value:
            _pieces(v, out, depth + 1)
    elif isinstance(value, _BUFFERS) and _large_buffer(value):
        n = value.nbytes if isinstance(value, memoryview) else len(value)
        out += (b"\xc6" + struct.pack(">I", n), value)
    elif _large_array(value):
        import numpy as np  # noqa: PLC0415 - present: _large_array saw an ndarray

        arr = np.ascontiguousarray(value)
        head = b"\x93" + encode(arr.dtype.str) + encode(list(value.shape))
        raw = arr.reshape(-1).view(np.uint8)  # the array's memory, not a copy
        body = head + b"\xc6" + struct.pack(">I", raw.nbytes)
        out += (b"\xc9" + struct.pack(">Ib", len(body) + raw.nbytes, _EXT_NDARRAY), body, raw)
    else:
        out.append(encode(value))


def _header(n: int, fix: int, fix_limit: int, code16: int, code32: int) -> bytes:
    if n < fix_limit:
        return bytes([fix | n])
    if n < 1 << 16:
        return bytes([code16]) + struct.pack(">H", n)
    return bytes([code32]) + struct.pack(">I", n)
