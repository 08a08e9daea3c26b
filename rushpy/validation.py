"""Checks of user input shared by Controller and Worker; errors name the bad value."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from rushpy.errors import ConfigError, TaskError

__all__ = [
    "broadcast",
    "check_extras",
    "check_keys",
    "check_mappings",
    "check_max_retries",
    "check_positive_seconds",
    "check_same_length",
    "check_task_timeouts",
    "check_timeout",
]

T = TypeVar("T")


def _is_list_like(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))


def check_mappings(values: Any, name: str) -> list[dict[str, Any]]:
    """Check a list of mappings with string keys; return plain dicts.

    Raises:
        TaskError: not a list, an element is not a mapping, or a key is not a string.

    """
    if isinstance(values, Mapping):
        raise TaskError(f"{name} must be a list of mappings; got one mapping - wrap it: [{name}]")
    if not _is_list_like(values):
        raise TaskError(f"{name} must be a list of mappings, got {type(values).__name__}: {values!r:.80}")
    out = []
    for i, item in enumerate(values):
        if not isinstance(item, Mapping):
            raise TaskError(
                f"{name}[{i}] must be a mapping such as {{'x': 1}}, got {type(item).__name__}: {item!r:.80}"
            )
        out.append(_string_keyed(item, f"{name}[{i}]"))
    return out


def _string_keyed(item: Mapping[Any, Any], where: str) -> dict[str, Any]:
    """``item`` as a plain dict, once every key is checked to be a string."""
    for key in item:
        if not isinstance(key, str):
            raise TaskError(f"{where} has key {key!r} of type {type(key).__name__}; keys must be strings")
    return dict(item)


def check_extras(ref: Sequence[Any], values: Any, name: str) -> list[dict[str, Any] | None]:
    """Check extras (``xss_extra``, ``yss_extra``): ``None`` or mappings with string keys.

    Broadcast like :func:`broadcast` (one entry for all, or one per task). An
    extra is merged into the task's row on every read, so anything but a
    mapping would break every read of the network: it is refused here, before
    anything is written.

    Args:
        ref: The tasks; only its length is used.
        values: ``None``, or a list of mappings (or ``None`` entries).
        name: Argument name for error messages.

    Returns:
        One plain dict (or ``None``) per task.

    Raises:
        TaskError: ``values`` has the wrong length, an entry is neither a
            mapping nor ``None`` (the message names its index), or a key is not
            a string.

    """
    out: list[dict[str, Any] | None] = []
    # Name the index in the caller's list: one extra for all tasks is [0], whatever the task.
    one_for_all = values is not None and len(values) == 1
    for i, extra in enumerate(broadcast(ref, values, name)):
        where = f"{name}[{0 if one_for_all else i}]"
        if extra is None:
            out.append(None)
        elif isinstance(extra, Mapping):
            out.append(_string_keyed(extra, where))
        else:
            raise TaskError(
                f"{where} must be a mapping or None, got {type(extra).__name__}: {extra!r:.80}; "
                "pass e.g. {'note': ...}"
            )
    return out


def check_same_length(ref: Sequence[Any], values: Sequence[T] | None, name: str) -> list[T | None]:
    """Check that ``values`` (optional) has one entry per entry of ``ref``.

    For per-task settings that must never be shared (``seeds``, ``priority``,
    ``timeouts`` lists): a single entry is not repeated. See :func:`broadcast`
    for values where one entry may stand for every task.

    Raises:
        TaskError: ``values`` is not a list, or its length differs from ``ref``'s.

    """
    if values is None:
        return [None] * len(ref)
    if not _is_list_like(values):
        raise TaskError(f"{name} must be a list with one entry per task, got {type(values).__name__}")
    if len(values) != len(ref):
        raise TaskError(f"{name} has {len(values)} entries but there are {len(ref)} tasks; pass one per task")
    return list(values)


def broadcast(ref: Sequence[Any], values: Sequence[T] | None, name: str) -> list[T | None]:
    """One entry per entry of ``ref``; a list of length 1 applies to every entry.

    For ``xss_extra``, ``yss``, ``yss_extra`` and ``conditions``, where one value
    for many tasks is the common case (one condition for many failed keys).
    Call it before writing anything, so a mismatch leaves Redis untouched.

    Args:
        ref: The tasks (keys or ``xss``); only its length is used.
        values: ``None`` (an entry of ``None`` per task), one entry for all, or
            one entry per task.
        name: Argument name for error messages.

    Raises:
        TaskError: ``values`` is not a list, or has neither 1 nor ``len(ref)`` entries.

    """
    if values is None:
        return [None] * len(ref)
    if not _is_list_like(values):
        raise TaskError(
            f"{name} must be a list (one entry per task, or one for all), got {type(values).__name__}"
        )
    if len(values) == 1:
        return [values[0]] * len(ref)
    if len(values) != len(ref):
        raise TaskError(
            f"{name} has {len(values)} entries but there are {len(ref)} tasks; pass one per task, "
            "or a list of one entry for all"
        )
    return list(values)


def check_keys(keys: Any) -> list[str]:
    """Check a list of task keys."""
    if not _is_list_like(keys):
        raise TaskError(f"expected a list of task keys, got {type(keys).__name__}: {keys!r:.80}")
    for k in keys:
        if not isinstance(k, str):
            raise TaskError(f"task keys are strings; got {k!r} of type {type(k).__name__}")
    return list(keys)


def check_timeout(timeout: Any, *, allow_none: bool) -> None:
    """Check a timeout in seconds (``None`` allowed when ``allow_none``).

    Raises:
        ConfigError: not a number >= 0; like every other bad duration.

    """
    if timeout is None and allow_none:
        return
    if (
        not isinstance(timeout, (int, float))
        or isinstance(timeout, bool)
        or math.isnan(timeout)
        or timeout < 0
    ):
        hint = "a number of seconds >= 0" + (" or None to wait forever" if allow_none else "")
        raise ConfigError(f"invalid timeout {timeout!r}: use {hint}")


def check_count(value: Any, name: str, *, minimum: int, hint: str) -> int:
    """Check a count (an ``int``, not a ``bool``) of at least ``minimum``.

    Raises:
        ConfigError: ``invalid <name>=<value>: <hint>``.

    """
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"invalid {name}={value!r}: {hint}")
    return value


def check_positive_seconds(value: Any, name: str) -> float:
    """Check a setting in seconds that must be > 0 (an interval, an idle timeout).

    Raises:
        ConfigError: not a number > 0; the message names ``name`` and the value.

    """
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value) or value <= 0:
        raise ConfigError(f"invalid {name}={value!r}: use seconds > 0, or None")
    return float(value)


def _per_task(value: Any, n: int, name: str) -> list[Any]:
    """One value for every task, or one entry per task."""
    if _is_list_like(value):
        if len(value) != n:
            raise TaskError(f"{name} has {len(value)} entries but there are {n} tasks; pass one per task")
        return list(value)
    return [value] * n


def check_task_timeouts(timeouts: Any, n: int) -> list[float | None]:
    """Check task timeouts: one number of seconds > 0 (or ``None``) for all, or one per task."""
    out = _per_task(timeouts, n, "timeouts")
    for i, value in enumerate(out):
        if value is None:
            continue
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value <= 0
        ):
            where = "timeouts" if not _is_list_like(timeouts) else f"timeouts[{i}]"
            raise TaskError(f"invalid {where}={value!r}: use a number of seconds > 0, or None for no limit")
        out[i] = float(value)
    return out


def check_max_retries(max_retries: Any, n: int) -> list[int | None]:
    """Check retry limits: one integer >= 0 (or ``None``) for all, or one per task."""
    out = _per_task(max_retries, n, "max_retries")
    for i, value in enumerate(out):
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            where = "max_retries" if not _is_list_like(max_retries) else f"max_retries[{i}]"
            raise TaskError(f"invalid {where}={value!r}: use an integer >= 0 (0: no retry), or None")
    return out
