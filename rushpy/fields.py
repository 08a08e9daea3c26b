"""Decoding stored task hashes field by field: bad data fails one task, never a read.

A task hash is written by rushpy, but anything that can write the network's
keys can change it (an operator, a bug, another program). This module is the
one place that turns stored fields back into values and checks each known
field's type:

=================================  ==============================================
field                              expected
=================================  ==============================================
``xs``, ``xs_extra``, ``ys_extra``  a mapping with string keys
``ys``                             a mapping (a worker loop may return other keys)
``condition``                      a mapping with ``message``
``conditions``                     a list
``attempts``, ``max_retries``      an integer >= 0
``timeout``                        a finite number > 0 (seconds)
``seed``                           an integer in [0, 2**64), as ``push_tasks`` takes
``created_at``, ``started_at``,    a datetime
``finished_at``
``worker_id``                      a string
=================================  ==============================================

Output relay (``push_tasks(..., capture_output=True)``, see
:mod:`rushpy.worker.capture`) adds no field of its own: the request is the
entry :data:`CAPTURE_OUTPUT` of ``xs_extra``; the captured ``stdout`` (a
string) and ``warnings`` (a list of mappings) are entries of ``ys_extra`` for
a result and of ``condition`` for a failure, so the checks above cover them.

Unknown fields are kept when they decode. Reads (:func:`decode_task`) return
the good fields of a bad hash as a :class:`DamagedTask` whose ``error`` names
every bad field and why; claims (:func:`popped_task`, :func:`popped_from_hash`)
return a :class:`CorruptTask` instead of a :class:`~rushpy.models.PoppedTask`,
which the worker fails for good with a ``CorruptTask`` condition.

The fast path decodes a hash in one comprehension and checks types with
``type(...) is`` tests; the careful per-field path runs only when that fails.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rushpy.codec import decode
from rushpy.models import Condition, PoppedTask

__all__ = [
    "CAPTURE_OUTPUT",
    "CORRUPT",
    "CorruptTask",
    "DamagedTask",
    "check_field",
    "decode_task",
    "popped_from_hash",
    "popped_task",
]

CORRUPT = "CorruptTask"
"""Condition type of a task failed because its stored data is unusable (never retried)."""

CAPTURE_OUTPUT = "capture_output"
"""Entry of a task's ``xs_extra`` asking the worker to capture its stdout and warnings (output relay)."""

_MAX_SEED = 2**64
_REASON_CHARS = 160
"""Longest decoder message kept in an error (a huge field must not make a huge error)."""


def _string_keys(value: Any) -> str | None:
    if type(value) is not dict:
        return f"is a {type(value).__name__}, not a mapping"
    for key in value:
        if type(key) is not str:
            return f"has key {key!r:.40} of type {type(key).__name__}; keys must be strings"
    return None


def _mapping(value: Any) -> str | None:
    return None if type(value) is dict else f"is a {type(value).__name__}, not a mapping"


def _condition(value: Any) -> str | None:
    if type(value) is dict and "message" in value:
        return None
    return f"is {value!r:.60}, not a mapping with 'message'"


def _history(value: Any) -> str | None:
    # Lua's cmsgpack packs an empty table as a map: an empty history may come back as {}.
    if type(value) is list or (type(value) is dict and not value):
        return None
    return f"is a {type(value).__name__}, not a list of conditions"


def _count(value: Any) -> str | None:
    if type(value) is int and value >= 0:
        return None
    return f"is {value!r:.60}, not an integer >= 0"


def _seconds(value: Any) -> str | None:
    if (type(value) is float or type(value) is int) and math.isfinite(value) and value > 0:
        return None
    return f"is {value!r:.60}, not a finite number of seconds > 0"


def _seed(value: Any) -> str | None:
    if type(value) is int and 0 <= value < _MAX_SEED:
        return None
    return f"is {value!r:.60}, not an integer in [0, 2**64)"


def _time(value: Any) -> str | None:
    return None if isinstance(value, dt.datetime) else f"is {value!r:.60}, not a datetime"


def _text(value: Any) -> str | None:
    return None if type(value) is str else f"is {value!r:.60}, not a string"


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "xs": _string_keys,
    "xs_extra": _string_keys,
    "ys": _mapping,
    "ys_extra": _string_keys,
    "condition": _condition,
    "conditions": _history,
    "attempts": _count,
    "max_retries": _count,
    "timeout": _seconds,
    "seed": _seed,
    "created_at": _time,
    "started_at": _time,
    "finished_at": _time,
    "worker_id": _text,
}
"""Per known field: returns why a decoded value is of the wrong type, or ``None``."""


def check_field(name: str, value: Any) -> str | None:
    """Why a decoded value of field ``name`` is unusable (``None``: fine, or an unknown field)."""
    check = _CHECKS.get(name)
    return None if check is None else check(value)


def _decode_field(name: str, raw: bytes) -> tuple[Any, str | None]:
    """The decoded value of one stored field and, if it is unusable, why."""
    try:
        value = decode(raw)
    except Exception as exc:  # any decoder failure (format, ext hook, ...) is bad data
        reason = f"{type(exc).__name__}: {exc}"[:_REASON_CHARS]
        return None, f"is not valid msgpack ({reason})"
    return value, check_field(name, value)


class DamagedTask(dict[str, Any]):
    """A task hash with fields that could not be used: the good fields, and why the others are bad.

    It is a ``dict`` of the fields that decoded and type-checked, so code
    that reads tasks keeps working; :attr:`errors` maps each bad field
    (``""``: the whole key) to its reason. Always truthy, even with no
    field left, so callers that skip missing tasks (``if task``) keep it.

    Attributes:
        errors: Reason per bad field.

    """

    __slots__ = ("errors",)

    def __init__(self, fields: Mapping[str, Any], errors: Mapping[str, str]) -> None:
        """Wrap the good ``fields`` and the ``errors`` of the bad ones."""
        super().__init__(fields)
        self.errors: dict[str, str] = dict(errors)

    def __bool__(self) -> bool:
        return True

    @property
    def error(self) -> str:
        """Every reason in one line, each naming its field (the ``error`` column of tables)."""
        return "; ".join(
            f"the task {reason}" if not name else f"field {name!r} {reason}"
            for name, reason in self.errors.items()
        )


def decode_task(flat: Sequence[bytes] | bytes) -> dict[str, Any]:
    """Decode one task hash as ``read.lua`` returns it, never raising for bad data.

    Args:
        flat: The flat ``HGETALL`` reply (name, value, name, value, ...), or the
            Redis type name when the task key is not a hash.

    Returns:
        A plain dict of every field when all decode and type-check (the fast
        path), else a :class:`DamagedTask`.

    """
    if isinstance(flat, bytes):
        kind = flat.decode(errors="replace")
        return DamagedTask({}, {"": f"is stored as a {kind}, not a hash"})
    it = iter(flat)
    try:
        task = {name.decode(): decode(value) for name, value in zip(it, it, strict=True)}
    except Exception:  # anything: the careful path says which field
        return _careful(flat)
    checks = _CHECKS
    for name, value in task.items():
        check = checks.get(name)
        if check is not None and check(value) is not None:
            return _careful(flat)
    return task


def _careful(flat: Sequence[bytes]) -> DamagedTask:
    """Decode field by field, keeping the good ones and the reason for each bad one."""
    fields: dict[str, Any] = {}
    errors: dict[str, str] = {}
    it = iter(flat)
    for raw_name, raw in zip(it, it, strict=True):
        try:
            name = raw_name.decode()
        except UnicodeDecodeError:
            errors[repr(raw_name)[:40]] = "has a name that is not UTF-8"
            continue
        value, reason = _decode_field(name, raw)
        if reason is None:
            fields[name] = value
        else:
            errors[name] = reason
    return DamagedTask(fields, errors)


@dataclass(frozen=True, slots=True)
class CorruptTask:
    """A claimed task whose stored inputs cannot be used: it must fail, for good.

    Attributes:
        key: The task key.
        attempt: The attempt the claim started (``None``: unknown, unfenced).
        message: Why, naming the field.

    """

    key: str
    attempt: int | None
    message: str

    def condition(self) -> Condition:
        """The ``CorruptTask`` condition the task fails with."""
        return Condition(CORRUPT, self.message)


_INPUTS = ("xs", "xs_extra", "timeout", "seed")


def popped_task(key: str, attempt: int, raws: Sequence[bytes | None]) -> PoppedTask | CorruptTask:
    """The task a claim returned, or why it cannot run.

    Args:
        key: The task key.
        attempt: The attempt the claim started.
        raws: The stored ``xs``, ``xs_extra``, ``timeout`` and ``seed`` as
            ``claim.lua`` returns them; ``xs`` must be present, the others may
            be absent (``None``).

    """
    if raws[0] is None:
        return CorruptTask(key, attempt, f"field 'xs' of task {key} is missing")
    values: list[Any] = []
    for name, raw in zip(_INPUTS, raws, strict=True):
        if raw is None:
            values.append(None)
            continue
        value, reason = _decode_field(name, raw)
        if reason is not None:
            return CorruptTask(key, attempt, f"field {name!r} of task {key} {reason}")
        values.append(value)
    return PoppedTask(key, values[0], values[1], attempt, values[2], values[3])


def popped_from_hash(key: str, task: Mapping[str, Any]) -> PoppedTask | CorruptTask:
    """The task to run from a decoded hash (:func:`decode_task`), or why it cannot run.

    Used to adopt tasks claimed before a lost reply: the same checks as a claim.
    """
    errors = task.errors if isinstance(task, DamagedTask) else {}
    attempts = task.get("attempts")
    attempt = attempts if "attempts" not in errors and attempts is not None else None
    for name in ("", *_INPUTS, "attempts"):
        if name in errors:
            where = f"task {key}" if not name else f"field {name!r} of task {key}"
            return CorruptTask(key, attempt, f"{where} {errors[name]}")
    if "xs" not in task:
        return CorruptTask(key, attempt, f"field 'xs' of task {key} is missing")
    return PoppedTask(
        key=key,
        xs=task["xs"],
        xs_extra=task.get("xs_extra"),
        attempt=attempt or 1,
        timeout=task.get("timeout"),
        seed=task.get("seed"),
    )
