"""Checks of user input: broadcasting of per-task lists and strict per-task lengths."""

from __future__ import annotations

from typing import Any

import pytest

from rushpy import TaskError
from rushpy.validation import broadcast, check_same_length

XSS = [{"x": 1}, {"x": 2}, {"x": 3}]


def test_broadcast_none_gives_none_per_task() -> None:
    assert broadcast(XSS, None, "yss_extra") == [None, None, None]


def test_broadcast_single_entry_applies_to_every_task() -> None:
    condition = {"message": "gave up"}
    assert broadcast(XSS, [condition], "conditions") == [condition, condition, condition]
    assert broadcast([], [condition], "conditions") == []


def test_broadcast_one_per_task_is_kept() -> None:
    yss = [{"y": 1}, {"y": 2}, {"y": 3}]
    out = broadcast(XSS, yss, "yss")
    assert out == yss
    assert out is not yss  # a copy: the caller's list is never aliased


@pytest.mark.parametrize("values", [[], [{"y": 1}, {"y": 2}], [{}] * 4])
def test_broadcast_other_lengths_raise(values: list[Any]) -> None:
    with pytest.raises(
        TaskError, match=rf"yss has {len(values)} entries but there are 3 tasks.*one entry for all"
    ):
        broadcast(XSS, values, "yss")


@pytest.mark.parametrize("values", [{"y": 1}, "abc", 3])
def test_broadcast_refuses_non_lists(values: Any) -> None:
    with pytest.raises(TaskError, match=rf"yss must be a list.*got {type(values).__name__}"):
        broadcast(XSS, values, "yss")


def test_check_same_length_does_not_broadcast() -> None:
    # seeds, priority and timeouts lists stay one-per-task: a single entry is a mistake.
    with pytest.raises(TaskError, match="seeds has 1 entries but there are 3 tasks"):
        check_same_length(XSS, [7], "seeds")
    assert check_same_length(XSS, [1, 2, 3], "seeds") == [1, 2, 3]
    assert check_same_length(XSS, None, "seeds") == [None, None, None]
    with pytest.raises(TaskError, match="seeds must be a list"):
        check_same_length(XSS, "123", "seeds")
