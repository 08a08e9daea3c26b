"""Output relay: ``push_tasks(..., capture_output=True)`` stores each task's stdout and warnings.

Workers run in this process (``run_function``), except the child-process path
(plain functions with a timeout), which imports the functions below by name.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import pytest

from rushpy import Controller, RedisConfig, Table, Worker, run_function
from rushpy.worker import capture
from rushpy.worker.capture import (
    MAX_STDOUT_CHARS,
    MAX_WARNING_CHARS,
    MAX_WARNINGS,
    TRUNCATED,
    Captured,
    capturing,
    wants_capture,
)

pytestmark = pytest.mark.usefixtures("anyio_backend")

_HERE = "tests.test_output_relay"


# -- functions run by the workers -----------------------------------------------------------
def chatty(x: int) -> dict[str, int]:
    print(f"hello {x}")
    warnings.warn(f"careful with {x}", UserWarning, stacklevel=1)
    return {"y": x}


def chatty_failure(x: int) -> dict[str, int]:
    print(f"about to fail {x}")
    warnings.warn("it goes wrong", RuntimeWarning, stacklevel=1)
    raise ValueError(f"bad {x}")


def lines(x: int) -> dict[str, int]:
    sys.stdout.writelines([f"a{x}\n", f"b{x}\n"])
    sys.stdout.flush()
    return {"y": x}


def flood(n_chars: int, n_warnings: int, long_message: int) -> dict[str, int]:
    print("x" * n_chars, end="")
    for i in range(n_warnings):
        warnings.warn(f"w{i}", UserWarning, stacklevel=1)
    if long_message:
        # A different line, so the warnings registry does not fold it into the loop's.
        warnings.warn("m" * long_message, UserWarning, stacklevel=1)
    return {"y": 0}


_barrier: list[threading.Barrier] = []  # the test's barrier (set per test)


def meet(x: int) -> dict[str, int]:
    """Print before and after meeting the other task: both run at the same time in two threads."""
    print(f"start {x}")
    _barrier[-1].wait()
    print(f"end {x}")
    return {"y": x}


_started: set[int] = set()


async def async_meet(x: int) -> dict[str, int]:
    """The same on the event loop: the two tasks interleave on one thread."""
    print(f"start {x}")
    _started.add(x)
    with anyio.fail_after(10):
        while len(_started) < 2:
            await asyncio.sleep(0.01)
    warnings.warn(f"async {x}", UserWarning, stacklevel=1)
    print(f"end {x}")
    return {"y": x}


async def async_sleeper(x: int) -> dict[str, int]:
    print(f"before the deadline {x}")
    await asyncio.sleep(30)
    return {"y": x}


# -- helpers --------------------------------------------------------------------------------
async def run_tasks(
    controller: Controller,
    config: RedisConfig,
    network_id: str,
    fun: Callable[..., Any],
    xss: Sequence[dict[str, Any]],
    *,
    concurrency: int = 1,
    **push: Any,
) -> Table:
    """Run ``xss`` on an in-process worker running ``fun``; the rows of the tasks."""
    push.setdefault("capture_output", True)
    with anyio.fail_after(60):
        async with Worker(network_id, config=config) as worker, anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: run_function(worker, fun, concurrency=concurrency, fun_path=f"{_HERE}:{fun.__name__}")
            )
            keys = await controller.push_tasks(xss, **push)
            await controller.wait_for_tasks(keys, timeout=30)
            await controller.stop_workers("terminate", [worker.worker_id])
    return await controller.fetch_tasks(keys)


def warning_messages(row: dict[str, Any]) -> list[tuple[str, str]]:
    return [(w["category"], w["message"]) for w in row["warnings"]]


# -- where the function runs ----------------------------------------------------------------
async def test_thread_results_carry_stdout_and_warnings(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    rows = await run_tasks(controller, config, network_id, chatty, [{"x": 1}, {"x": 2}])
    for row, x in zip(rows, (1, 2), strict=True):
        assert row["state"] == "finished"
        assert row["y"] == x
        assert row["stdout"] == f"hello {x}\n"
        assert warning_messages(row) == [("UserWarning", f"careful with {x}")]
        assert row["warnings"][0]["filename"].endswith("test_output_relay.py")
        assert row["warnings"][0]["lineno"] > 0
        assert row["capture_output"] is True


@pytest.mark.filterwarnings("ignore:careful with:UserWarning")
async def test_without_capture_output_nothing_is_stored(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    rows = await run_tasks(controller, config, network_id, chatty, [{"x": 1}], capture_output=False)
    assert rows[0]["state"] == "finished"
    assert "stdout" not in rows.columns and "warnings" not in rows.columns


async def test_failures_carry_their_output_in_the_condition_and_the_row(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    rows = await run_tasks(controller, config, network_id, chatty_failure, [{"x": 3}])
    row = rows[0]
    assert row["state"] == "failed"
    assert row["condition"]["type"] == "ValueError"
    assert row["condition"]["stdout"] == "about to fail 3\n"
    assert row["stdout"] == "about to fail 3\n"  # lifted into the column
    assert warning_messages(row) == [("RuntimeWarning", "it goes wrong")]


async def test_concurrent_threads_keep_their_output_apart(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    _barrier.append(threading.Barrier(2, timeout=10))
    rows = await run_tasks(controller, config, network_id, meet, [{"x": 1}, {"x": 2}], concurrency=2)
    assert [r["state"] for r in rows] == ["finished", "finished"], rows.rows
    assert [r["stdout"] for r in rows] == ["start 1\nend 1\n", "start 2\nend 2\n"]


async def test_concurrent_async_tasks_keep_their_output_apart(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    _started.clear()
    rows = await run_tasks(controller, config, network_id, async_meet, [{"x": 1}, {"x": 2}], concurrency=2)
    assert [r["state"] for r in rows] == ["finished", "finished"], rows.rows
    assert [r["stdout"] for r in rows] == ["start 1\nend 1\n", "start 2\nend 2\n"]
    assert [warning_messages(r) for r in rows] == [[("UserWarning", "async 1")], [("UserWarning", "async 2")]]


async def test_async_failure_carries_its_output(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async def failing(x: int) -> dict[str, int]:
        print("async failing")
        raise KeyError(x)

    rows = await run_tasks(controller, config, network_id, failing, [{"x": 1}])
    assert rows[0]["state"] == "failed"
    assert rows[0]["stdout"] == "async failing\n"


async def test_async_timeout_keeps_what_was_printed_before_the_deadline(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    rows = await run_tasks(controller, config, network_id, async_sleeper, [{"x": 5}], timeouts=0.3)
    row = rows[0]
    assert row["state"] == "failed"
    assert row["condition"]["type"] == "TaskTimeout"
    assert row["stdout"] == "before the deadline 5\n"


async def test_child_process_relays_output_of_results_and_failures(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    # A task timeout runs a plain function in a child process (by import path).
    rows = await run_tasks(controller, config, network_id, chatty, [{"x": 7}], timeouts=30)
    assert rows[0]["state"] == "finished"
    assert rows[0]["stdout"] == "hello 7\n"
    assert warning_messages(rows[0]) == [("UserWarning", "careful with 7")]
    rows = await run_tasks(controller, config, network_id, chatty_failure, [{"x": 8}], timeouts=30)
    assert rows[0]["state"] == "failed"
    assert rows[0]["condition"]["type"] == "ValueError"
    assert rows[0]["stdout"] == "about to fail 8\n"


async def test_child_process_without_capture_stores_nothing(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    rows = await run_tasks(
        controller, config, network_id, chatty, [{"x": 7}], timeouts=30, capture_output=False
    )
    assert rows[0]["state"] == "finished"
    assert "stdout" not in rows.columns


async def test_writelines_is_captured(controller: Controller, config: RedisConfig, network_id: str) -> None:
    rows = await run_tasks(controller, config, network_id, lines, [{"x": 1}])
    assert rows[0]["stdout"] == "a1\nb1\n"


async def test_each_task_reports_a_warning_raised_at_the_same_place(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    # The "once per location" registry would hide the second task's warning.
    rows = await run_tasks(controller, config, network_id, chatty, [{"x": 1}, {"x": 1}])
    assert [warning_messages(r) for r in rows] == [[("UserWarning", "careful with 1")]] * 2


async def test_output_is_bounded_with_markers(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    xs = {"n_chars": MAX_STDOUT_CHARS + 10, "n_warnings": 3, "long_message": MAX_WARNING_CHARS + 5}
    rows = await run_tasks(controller, config, network_id, flood, [xs])
    row = rows[0]
    assert row["state"] == "finished", row
    assert row["stdout"].startswith("x" * MAX_STDOUT_CHARS)
    assert row["stdout"][MAX_STDOUT_CHARS:] == "\n[... output truncated: 10 more characters]\n"
    kept = row["warnings"]
    assert [w["message"] for w in kept[:3]] == ["w0", "w1", "w2"]
    assert kept[3]["message"] == "m" * MAX_WARNING_CHARS + " [... 5 more characters]"
    assert len(kept) == 4


# -- the buffer and the relays, directly ----------------------------------------------------
def test_buffer_counts_what_it_drops() -> None:
    buf = Captured()
    buf.write("a" * (MAX_STDOUT_CHARS - 1))
    buf.write("bc")  # one fits, one is dropped
    buf.write("def")  # nothing fits
    assert buf.kept == MAX_STDOUT_CHARS and buf.dropped == 4
    for i in range(MAX_WARNINGS + 3):
        buf.warn(f"w{i}", UserWarning, "f.py", i)
    out = buf.fields()
    assert out["stdout"].endswith("ab\n[... output truncated: 4 more characters]\n")
    assert len(out["warnings"]) == MAX_WARNINGS + 1
    assert out["warnings"][-1] == {
        "category": TRUNCATED,
        "message": "3 more warnings were not kept",
        "filename": "",
        "lineno": 0,
    }
    assert Captured().fields() == {"stdout": "", "warnings": []}


def test_writes_outside_a_captured_task_go_through(capsys: pytest.CaptureFixture[str]) -> None:
    with capturing(True) as buf:
        print("inside")
    print("outside")
    sys.stdout.flush()
    assert buf is not None and buf.fields()["stdout"] == "inside\n"
    assert capsys.readouterr().out == "outside\n"
    with capturing(False) as nothing:
        print("not captured")
    assert nothing is None
    assert capsys.readouterr().out == "not captured\n"


def test_relays_are_installed_once() -> None:
    with capturing(True), capturing(True):
        assert isinstance(sys.stdout, capture._StdoutRelay)
        inner = sys.stdout._stream  # type: ignore[attr-defined]
        assert not isinstance(inner, capture._StdoutRelay), "a relay wrapped another relay"
        assert isinstance(warnings.showwarning, capture._WarningRelay)
        assert not isinstance(warnings.showwarning._show, capture._WarningRelay)


def test_warnings_outside_a_captured_task_reach_the_previous_handler() -> None:
    seen: list[tuple[Any, ...]] = []
    relay = capture._WarningRelay(lambda *args: seen.append(args))
    relay("plain", UserWarning, "f.py", 3)
    assert seen == [("plain", UserWarning, "f.py", 3, None, None)]
    with capturing(True) as buf:
        relay("caught", UserWarning, "f.py", 4)
    assert len(seen) == 1
    assert buf is not None and buf.warnings[0]["message"] == "caught"


def test_wants_capture() -> None:
    assert not wants_capture(None)
    assert not wants_capture({})
    assert not wants_capture({"capture_output": False})
    assert wants_capture({"capture_output": True, "other": 1})
