"""Columns of a column store that each hold one kind of cell: keys, timestamps, worker ids.

:class:`KeyColumn`: rushpy's task keys are 16 base64url characters (12 random bytes,
:func:`rushpy.keys.new_task_keys`); earlier versions made 32 hex characters (16
bytes). Kept as their bytes in one ``bytearray``, a million keys take 12 MB
instead of about 65 MB of ``str`` objects. Keys of any other form (written by
hand, or a network that mixes both) are kept aside as strings.

:class:`TimeColumns`: ``created_at``, ``started_at`` and ``finished_at`` as their
10 stored bytes (64-bit msgpack timestamps), turned into datetimes exactly as
msgpack does when read. :class:`WorkerColumn`: worker ids as codes into the
list of distinct ids (a network has few workers and many rows).
"""

from __future__ import annotations

import datetime as dt
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rushpy.codec import decode
from rushpy.column_batch import NO_TIME, TS_LEN, times_ok
from rushpy.keys import key_from_bytes, key_to_bytes

__all__ = [
    "BASE64_KEYS",
    "HEX_KEYS",
    "KeyColumn",
    "KeyFormat",
    "TimeColumns",
    "WorkerColumn",
    "key_format",
    "pack_keys",
]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_LOW34 = (1 << 34) - 1


@dataclass(frozen=True, slots=True)
class KeyFormat:
    """How task keys of one form are packed into fixed-width bytes, losslessly.

    Attributes:
        chars: Characters of a key.
        width: Bytes of a packed key.
        pack: Characters to bytes (raises ``ValueError`` for other characters).
        unpack: Bytes back to characters.

    """

    chars: int
    width: int
    pack: Callable[[str], bytes]
    unpack: Callable[[bytes], str]


HEX_KEYS = KeyFormat(32, 16, bytes.fromhex, bytes.hex)
"""32 lowercase hex characters (128 bits): task keys of earlier versions."""

BASE64_KEYS = KeyFormat(16, 12, key_to_bytes, key_from_bytes)
"""16 characters (96 bits, :func:`rushpy.keys.new_task_keys`): 12 bytes are exactly 16 characters."""


def key_format(keys: Sequence[str]) -> KeyFormat:
    """The format of a network's keys, judged by the first one (others are kept aside if they differ)."""
    return BASE64_KEYS if keys and len(keys[0]) == BASE64_KEYS.chars else HEX_KEYS


def _pack(fmt: KeyFormat, text: str, n: int) -> bytes | None:
    """``text`` (``n`` keys joined) packed, or ``None`` if it does not come back exactly."""
    try:
        packed = fmt.pack(text)
    except ValueError:  # binascii.Error too; non-ASCII text
        return None
    return packed if len(packed) == fmt.width * n and fmt.unpack(packed) == text else None


def pack_keys(keys: list[str], fmt: KeyFormat) -> tuple[bytes, dict[int, str]]:
    """``fmt.width`` bytes per key (zeros for a key not in ``fmt``), and the keys not in ``fmt`` by index."""
    if set(map(len, keys)) == {fmt.chars}:
        packed = _pack(fmt, "".join(keys), len(keys))
        if packed is not None:
            return packed, {}  # the usual case, checked in C for the whole batch
    parts: list[bytes] = []
    others: dict[int, str] = {}
    for i, key in enumerate(keys):
        one = _pack(fmt, key, 1) if len(key) == fmt.chars else None
        if one is None:
            others[i] = key
            one = bytes(fmt.width)
        parts.append(one)
    return b"".join(parts), others


class KeyColumn:
    """The keys of a column store's rows, in row order, packed in the format of the first key."""

    __slots__ = ("_format", "_others", "_packed")

    def __init__(self) -> None:
        """Start with no keys."""
        self._packed = bytearray()
        self._format: KeyFormat | None = None  # chosen by the first keys pushed
        self._others: dict[int, str] = {}

    def push(self, first: int, keys: list[str]) -> None:
        """Store the keys of rows ``first, first + 1, ...``."""
        if self._format is None:
            self._format = key_format(keys)
        packed, others = pack_keys(keys, self._format)
        self._packed += packed
        self._others.update({first + i: key for i, key in others.items()})

    def key(self, i: int) -> str:
        """The key of row ``i``."""
        other = self._others.get(i)
        if other is not None:
            return other
        fmt = self._format or HEX_KEYS  # None only while there are no rows
        return fmt.unpack(bytes(self._packed[fmt.width * i : fmt.width * (i + 1)]))

    def keys(self, r: range) -> list[str]:
        """The keys of the rows in ``r`` (a step-1 range within the rows pushed)."""
        if self._others:
            return [self.key(i) for i in r]
        fmt = self._format or HEX_KEYS  # None only while there are no rows
        text = fmt.unpack(bytes(self._packed[fmt.width * r.start : fmt.width * r.stop]))
        return [text[k : k + fmt.chars] for k in range(0, len(text), fmt.chars)]


class TimeColumns:
    """The three timestamps of every row, 10 stored bytes each (zeros: absent)."""

    __slots__ = ("_columns",)

    def __init__(self) -> None:
        """Start with no rows."""
        self._columns = (bytearray(), bytearray(), bytearray())

    def extend(self, joined: Sequence[bytes]) -> None:
        """Add rows: per timestamp, the stored bytes of every row, joined."""
        for column, raws in zip(self._columns, joined, strict=True):
            column.extend(raws)

    def add_absent(self) -> None:
        """Add a row without timestamps (a row kept as a dict)."""
        for column in self._columns:
            column.extend(NO_TIME)

    def all_ok_from(self, first: int, n: int) -> bool:
        """Whether the ``n`` rows from ``first`` hold valid timestamps only (checked in C)."""
        return all(times_ok(c[TS_LEN * first :], n) for c in self._columns)

    def ok(self, i: int, k: int) -> bool:
        """Whether timestamp ``k`` of row ``i`` is valid."""
        return times_ok(bytes(self._columns[k][i * TS_LEN : (i + 1) * TS_LEN]), 1)

    def at(self, i: int, k: int) -> dt.datetime:
        """Timestamp ``k`` (0 created, 1 started, 2 finished) of row ``i``."""
        v = int.from_bytes(self._columns[k][i * TS_LEN + 2 : (i + 1) * TS_LEN], "big")
        # As msgpack builds it: the epoch plus whole microseconds (nanoseconds truncated).
        return _EPOCH + dt.timedelta(seconds=v & _LOW34, microseconds=(v >> 34) // 1000)


class WorkerColumn:
    """Every row's worker id as a code (-1: none) into the distinct ids seen."""

    __slots__ = ("_codes", "_names", "codes")

    def __init__(self) -> None:
        """Start with no rows."""
        self.codes = array("i")
        self._names: list[str] = []
        self._codes: dict[bytes, int] = {}

    def code(self, raw: bytes) -> int:
        """Code of a stored worker id (-1: not a string); a new id gets the next code."""
        code = self._codes.get(raw)
        if code is None:
            try:
                wid = decode(raw)
            except Exception:  # any decoder failure is bad data
                return -1
            if type(wid) is not str:
                return -1
            code = self._codes[raw] = len(self._names)
            self._names.append(wid)
        return code

    def at(self, i: int) -> str:
        """Worker id of row ``i`` (a row with a worker id)."""
        return self._names[self.codes[i]]
