"""Inputs are validated before anything is written (issue 8, point 10).

Extras (``xss_extra``, ``yss_extra``) must be mappings or ``None``; numpy values
that would not come back as they went in (structured and masked arrays) are
refused with a :class:`TaskError` naming where they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rushpy import Controller
from rushpy.codec import decode, encode
from rushpy.errors import TaskError

pytestmark = pytest.mark.anyio

# Tests below pass wrongly typed extras on purpose (hence their type: ignore comments).
BAD_EXTRAS: list[Any] = [5, "text", [1, 2], (("a", 1),), b"raw"]


# -- extras must be mappings ---------------------------------------------------------------


@pytest.mark.parametrize("extra", BAD_EXTRAS)
async def test_push_tasks_refuses_an_extra_that_is_not_a_mapping(controller: Controller, extra: Any) -> None:
    with pytest.raises(TaskError, match=r"xss_extra\[0\] must be a mapping"):
        await controller.push_tasks([{"x": 1}], xss_extra=[extra])
    assert await controller.n_tasks() == 0


async def test_the_message_names_the_index_of_the_bad_extra(controller: Controller) -> None:
    with pytest.raises(TaskError, match=r"xss_extra\[2\] must be a mapping or None, got int: 5"):
        await controller.push_tasks([{"x": i} for i in range(3)], xss_extra=[{"a": 1}, None, 5])  # type: ignore[list-item]
    assert await controller.n_tasks() == 0


async def test_one_extra_for_all_tasks_is_named_by_its_own_index(controller: Controller) -> None:
    with pytest.raises(TaskError, match=r"xss_extra\[0\] must be a mapping or None, got list"):
        await controller.push_tasks([{"x": 1}, {"x": 2}, {"x": 3}], xss_extra=[[5]])  # type: ignore[list-item]
    assert await controller.n_tasks() == 0


async def test_extra_keys_must_be_strings(controller: Controller) -> None:
    with pytest.raises(TaskError, match=r"xss_extra\[1\] has key 3 of type int; keys must be strings"):
        await controller.push_tasks([{"x": 1}, {"x": 2}], xss_extra=[None, {3: "a"}])  # type: ignore[dict-item]
    assert await controller.n_tasks() == 0


async def test_push_priority_tasks_refuses_a_bad_extra(controller: Controller) -> None:
    with pytest.raises(TaskError, match=r"xss_extra\[0\] must be a mapping"):
        await controller.push_priority_tasks([{"x": 1}], priority=[None], xss_extra=[5])  # type: ignore[list-item]
    assert await controller.n_tasks() == 0


async def test_push_finished_tasks_refuses_bad_extras(controller: Controller) -> None:
    with pytest.raises(TaskError, match=r"xss_extra\[0\] must be a mapping"):
        await controller.push_finished_tasks([{"x": 1}], [{"y": 1}], xss_extra=[5])  # type: ignore[list-item]
    with pytest.raises(TaskError, match=r"yss_extra\[1\] must be a mapping"):
        await controller.push_finished_tasks([{"x": 1}, {"x": 2}], [{"y": 1}], yss_extra=[None, [5]])  # type: ignore[list-item]
    assert await controller.n_tasks() == 0


async def test_push_failed_tasks_refuses_a_bad_extra(controller: Controller) -> None:
    with pytest.raises(TaskError, match=r"xss_extra\[0\] must be a mapping"):
        await controller.push_failed_tasks([{"x": 1}], ["boom"], xss_extra=["no"])  # type: ignore[list-item]
    assert await controller.n_tasks() == 0


async def test_good_extras_are_stored_and_every_read_still_works(controller: Controller) -> None:
    # One extra broadcast to every task, mappings and None per task.
    keys = await controller.push_tasks([{"x": 1}, {"x": 2}], xss_extra=[{"tag": "a"}])
    await controller.push_finished_tasks(
        [{"x": 3}, {"x": 4}], [{"y": 1}], xss_extra=[None, {"tag": "b"}], yss_extra=[{"note": "n"}, None]
    )
    await controller.push_failed_tasks([{"x": 5}], ["boom"], xss_extra=None)
    assert len(keys) == 2
    assert await controller.n_tasks() == 5
    table = await controller.fetch_tasks()
    assert len(table) == 5
    assert len(await controller.fetch_failed_tasks()) == 1


# -- values that cannot round-trip ---------------------------------------------------------


def test_structured_array_is_refused_naming_its_path() -> None:
    arr = np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")])
    with pytest.raises(TaskError, match=r"xs\['w'\]\[1\]: it is a structured numpy array .*fields a, b"):
        encode({"w": [0, arr]}, name="xs")


def test_structured_scalar_is_refused() -> None:
    arr = np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")])
    with pytest.raises(TaskError, match=r"xs\['w'\]: it is a structured numpy value"):
        encode({"w": arr[0]}, name="xs")


@pytest.mark.parametrize(
    "masked",
    [np.ma.masked_array([1, 2, 3], mask=[False, True, False]), np.ma.masked_array([1.0]), np.ma.masked],
)
def test_masked_array_is_refused_naming_its_path(masked: Any) -> None:
    with pytest.raises(TaskError, match=r"ys\['m'\]: it is a masked numpy array.*filled"):
        encode({"m": masked}, name="ys")


def test_plain_and_void_arrays_still_round_trip() -> None:
    # Only arrays with fields or a mask are refused: a plain array, and raw bytes as void, are kept.
    plain = np.arange(6, dtype="i2").reshape(2, 3)
    np.testing.assert_array_equal(decode(encode(plain)), plain)
    raw = np.array([b"ab", b"cd"], dtype="V2")
    assert decode(encode(raw)).tolist() == raw.tolist()


async def test_push_of_a_masked_array_is_refused_before_anything_is_written(controller: Controller) -> None:
    with pytest.raises(TaskError, match=r"\['x'\]: it is a masked numpy array"):
        await controller.push_tasks([{"x": 1}, {"x": np.ma.masked_array([1, 2], mask=[True, False])}])
    assert await controller.n_tasks() == 0
