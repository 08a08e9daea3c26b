"""The msgpack codec of task values: round trips and refusals."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from typing import Any

import anyio
import numpy as np
import pytest

from rushpy import Controller, RedisConfig, TaskError, Worker, run_function
from rushpy.codec import decode, encode


def round_trip(value: Any) -> Any:
    data = encode(value)
    assert isinstance(data, bytes)
    return decode(data)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        1,
        -1,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        0.0,
        -2.5,
        1e308,
        5e-324,
        "",
        "text",
        "ünïcødé ✓ 日本",
        b"",
        b"\x00\xff\x10binary",
        [],
        {},
        [1, "a", None, 2.5, b"x"],
        {"a": 1, "b": [1, 2, {"c": [None, True]}], "d": {"e": {"f": "g"}}},
        {1: "int key", 2.5: "float key"},
    ],
)
def test_plain_round_trip(value: Any) -> None:
    decoded = round_trip(value)
    assert decoded == value
    assert type(decoded) is type(value)


def test_floats_keep_precision() -> None:
    for value in (0.1, 1 / 3, math.pi, -1e-300):
        assert round_trip(value) == value
    assert math.isnan(round_trip(float("nan")))
    assert round_trip(float("inf")) == float("inf")
    assert round_trip(float("-inf")) == float("-inf")


def test_str_and_bytes_stay_distinct() -> None:
    assert round_trip({"s": "abc", "b": b"abc"}) == {"s": "abc", "b": b"abc"}
    decoded = round_trip(["abc", b"abc"])
    assert type(decoded[0]) is str
    assert type(decoded[1]) is bytes


def test_tuples_become_lists() -> None:
    assert round_trip((1, (2, 3))) == [1, [2, 3]]


# -- dates and numbers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC),
        dt.datetime(1900, 1, 1, 0, 0, 0, 1, tzinfo=dt.UTC),
        dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
    ],
)
def test_aware_datetime(value: dt.datetime) -> None:
    decoded = round_trip(value)
    assert isinstance(decoded, dt.datetime)
    assert decoded.tzinfo is not None
    assert decoded == value  # same instant
    assert decoded.utcoffset() is not None


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2024, 1, 2, 3, 4, 5, 6),
        dt.datetime(1969, 12, 31, 23, 59, 59),
        dt.datetime.min,
        dt.datetime.max,
    ],
)
def test_naive_datetime(value: dt.datetime) -> None:
    decoded = round_trip(value)
    assert isinstance(decoded, dt.datetime)
    assert decoded.tzinfo is None
    assert decoded == value


def test_naive_and_aware_stay_apart() -> None:
    naive = dt.datetime(2024, 1, 1, 12, 0)
    aware = naive.replace(tzinfo=dt.UTC)
    got_naive, got_aware = round_trip([naive, aware])
    assert got_naive.tzinfo is None
    assert got_aware.tzinfo is not None
    assert (got_naive, got_aware) == (naive, aware)


@pytest.mark.parametrize("value", [dt.date(2024, 2, 29), dt.date(1, 1, 1), dt.date(9999, 12, 31)])
def test_date(value: dt.date) -> None:
    decoded = round_trip(value)
    assert type(decoded) is dt.date
    assert decoded == value


@pytest.mark.parametrize(
    "value",
    [
        dt.timedelta(0),
        dt.timedelta(days=3, seconds=5, microseconds=7),
        dt.timedelta(days=-1, seconds=5, microseconds=7),
        dt.timedelta(microseconds=-1),
        dt.timedelta.max,
        dt.timedelta.min,
    ],
)
def test_timedelta(value: dt.timedelta) -> None:
    decoded = round_trip(value)
    assert type(decoded) is dt.timedelta
    assert decoded == value


@pytest.mark.parametrize("text", ["1.10", "-0.000001", "123456789012345678901234567890.123456789", "1E+5"])
def test_decimal(text: str) -> None:
    value = decimal.Decimal(text)
    decoded = round_trip(value)
    assert type(decoded) is decimal.Decimal
    assert decoded == value
    assert str(decoded) == text  # exponent and trailing zeros kept


def test_decimal_specials() -> None:
    assert round_trip(decimal.Decimal("Infinity")) == decimal.Decimal("Infinity")
    assert round_trip(decimal.Decimal("NaN")).is_nan()


def test_extension_types_nested() -> None:
    value = {
        "when": [dt.date(2024, 1, 1), dt.datetime(2024, 1, 1, 1, 1)],
        "amount": {"total": decimal.Decimal("9.99")},
        "wait": dt.timedelta(seconds=1.5),
    }
    assert round_trip(value) == value


# -- numpy -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.int32).reshape(2, 3),
        np.arange(24, dtype=np.int64).reshape(2, 3, 4),
        np.array([1.5, -2.5, np.inf], dtype=np.float64),
        np.array([1.5, 2.5], dtype=np.float32),
        np.array([1.5, 2.5], dtype=">f8"),
        np.array([1, 255], dtype=np.uint8),
        np.array([True, False, True]),
        np.array([1 + 2j, -3j], dtype=np.complex128),
        np.array(["ab", "c"]),
        np.zeros((0, 3)),
        np.array(["2024-01-01", "2024-02-01"], dtype="datetime64[D]"),
        np.array([[1.0, 2.0], [3.0, 4.0]], order="F"),
        np.arange(12).reshape(3, 4)[:, ::2],
    ],
    ids=lambda a: f"{a.dtype.str}{list(a.shape)}",
)
def test_numpy_arrays(array: np.ndarray) -> None:
    decoded = round_trip(array)
    assert isinstance(decoded, np.ndarray)
    assert decoded.dtype == array.dtype
    assert decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)
    assert decoded.flags.writeable


@pytest.mark.parametrize("array", [np.array(5), np.array(2.5, dtype=np.float32)])
def test_numpy_zero_dimensional_array(array: np.ndarray) -> None:
    decoded = round_trip(array)
    assert isinstance(decoded, np.ndarray)
    assert decoded.dtype == array.dtype
    assert decoded.shape == ()
    assert decoded == array


def test_numpy_object_array_is_refused() -> None:
    # It would come back as a list, not an array: refused, naming the field.
    with pytest.raises(TaskError, match=r"xs\['w'\].*numpy array of Python objects.*tolist"):
        encode({"w": np.array([1, "a", None], dtype=object)}, name="xs")


def test_numpy_array_inside_mapping() -> None:
    decoded = round_trip({"w": np.eye(2), "n": 1})
    assert decoded["n"] == 1
    np.testing.assert_array_equal(decoded["w"], np.eye(2))


@pytest.mark.parametrize(
    ("scalar", "expected"),
    [
        (np.int64(3), 3),
        (np.int8(-4), -4),
        (np.uint64(2**64 - 1), 2**64 - 1),
        (np.float32(1.5), 1.5),
        (np.float64(0.1), 0.1),
        (np.float16(0.5), 0.5),
        (np.bool_(True), True),
        (np.str_("x"), "x"),
    ],
)
def test_numpy_scalars(scalar: Any, expected: Any) -> None:
    decoded = round_trip(scalar)
    assert decoded == expected
    assert type(decoded) is type(expected)


@pytest.mark.parametrize(
    ("scalar", "expected"),
    [
        (np.datetime64("2024-01-02T03:04:05"), dt.datetime(2024, 1, 2, 3, 4, 5)),
        (np.datetime64("2024-01-02"), dt.date(2024, 1, 2)),
        (np.timedelta64(5, "s"), dt.timedelta(seconds=5)),
    ],
)
def test_numpy_time_scalars(scalar: Any, expected: Any) -> None:
    # numpy scalars are documented as supported; the time ones become their
    # datetime equivalents, which the codec supports too.
    assert round_trip(scalar) == expected


# -- sets --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [{3, 1, 2}, frozenset({"b", "a"}), set(), frozenset()])
def test_set_is_refused(value: Any) -> None:
    # A set would come back as a list: refuse it rather than change the value.
    with pytest.raises(TaskError, match=r"cannot encode value at xs\['x'\]: it is a (set|frozenset).*sorted"):
        encode({"x": value}, name="xs")


def test_refused_element_is_named_by_its_path() -> None:
    with pytest.raises(TaskError, match=r"cannot encode value at ys\['a'\]\[1\]\['b'\]: it is a set"):
        encode({"a": [1, {"b": {1}}], "c": 2}, name="ys")
    with pytest.raises(TaskError, match=r"cannot encode value at value\[2\]: it is a frozenset"):
        encode([1, 2, frozenset({3})])
    with pytest.raises(TaskError, match=r"cannot encode value at xs key frozenset\(\{1\}\)"):
        encode({frozenset({1}): 1}, name="xs")


def test_refused_integer_is_named() -> None:
    with pytest.raises(TaskError, match=r"cannot encode value at xs\['n'\]: it is the integer " + str(2**70)):
        encode({"n": 2**70}, name="xs")


def test_leaf_refused_by_msgpack_itself_is_named() -> None:
    # A lone surrogate cannot be UTF-8 encoded: msgpack raises, not the codec's hook.
    with pytest.raises(
        TaskError, match=r"cannot encode value at xs\['s'\]: it cannot be encoded \(.*surrogates"
    ):
        encode({"s": "\ud800"}, name="xs")


def test_too_deep_value_still_raises_task_error() -> None:
    value: list[Any] = []
    for _ in range(2000):
        value = [value]
    with pytest.raises(TaskError, match=r"cannot encode value at xs: it cannot be encoded \(recursion limit"):
        encode(value, name="xs")


# -- refusals ----------------------------------------------------------------------------------


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (Opaque(), "Opaque"),
        (object(), "object"),
        (1j, "complex"),
        ({"nested": [1, {"deep": Opaque()}]}, "Opaque"),
        ([[1, 2], Opaque()], "Opaque"),
        (range(3), "range"),
        (print, "builtin_function_or_method"),
    ],
)
def test_unsupported_types_raise_task_error(value: Any, type_name: str) -> None:
    with pytest.raises(TaskError) as info:
        encode(value)
    assert type_name in str(info.value)


def test_task_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="Opaque"):
        encode(Opaque())


def test_int_too_large_raises_task_error() -> None:
    with pytest.raises(TaskError, match=str(2**64)):
        encode(2**64)


def test_encodable_value_decodes() -> None:
    # Whatever encode() accepts must come back from decode(): a mapping with
    # tuple keys is either refused up front or round-tripped.
    value = {("a", 1): 2}
    try:
        data = encode(value)
    except TaskError:
        return
    decoded = decode(data)
    assert len(decoded) == 1
    assert list(decoded.values()) == [2]


# -- through the controller and the worker -----------------------------------------------------


async def test_push_of_a_set_is_refused_before_anything_is_written(controller: Controller) -> None:
    with pytest.raises(TaskError, match=r"\['x'\]: it is a set"):
        await controller.push_tasks([{"x": 1}, {"x": {1, 2}}])
    assert await controller.n_tasks() == 0


async def _returns_a_set(x: int) -> dict[str, Any]:
    return {"y": {x, x + 1}}


async def test_function_returning_a_set_fails_its_task(
    controller: Controller, network_id: str, config: RedisConfig
) -> None:
    # The worker's result check encodes ys: the codec's TaskError fails the task
    # (it is not recorded as finished with a list).
    (key,) = await controller.push_tasks([{"x": 1}])
    async with Worker(network_id, config=config) as worker, anyio.create_task_group() as tg:
        tg.start_soon(lambda: run_function(worker, _returns_a_set))
        rows = (await controller.wait_for_tasks([key], timeout=60)).to_records()
        tg.cancel_scope.cancel()
    assert [row["state"] for row in rows] == ["failed"]
    condition = rows[0]["condition"]
    assert "TaskError" in str(condition)
    assert "['y']: it is a set" in str(condition)
    assert await controller.n_finished_tasks() == 0
