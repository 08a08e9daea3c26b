"""Progress bars of waits: when they are drawn, what they count, and how the read path feeds them."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator

import pytest
from rich.console import Console

from rushpy import Controller
from rushpy.errors import ConfigError
from rushpy.progress import TaskProgress, progress_enabled, task_progress


@pytest.fixture
def tty() -> Iterator[io.TextIOWrapper]:
    """A real terminal (the slave side of a pseudo-terminal) to write to."""
    master, slave = os.openpty()
    stream = open(slave, "w")  # noqa: SIM115  # closed below
    try:
        yield stream
    finally:
        stream.close()
        os.close(master)


def test_explicit_switches() -> None:
    assert progress_enabled(True, io.StringIO()) is True
    assert progress_enabled(False, io.StringIO()) is False


def test_default_is_on_only_on_a_terminal(tty: io.TextIOWrapper) -> None:
    assert progress_enabled(None, tty) is True
    assert progress_enabled(None, io.StringIO()) is False
    # pytest captures standard error: the default stream is no terminal here.
    assert progress_enabled(None) is False


def test_default_is_off_on_a_closed_or_odd_stream() -> None:
    closed = io.StringIO()
    closed.close()
    assert progress_enabled(None, closed) is False  # isatty raises ValueError
    assert progress_enabled(None, object()) is False  # type: ignore[arg-type]  # no isatty


def test_bad_switch_is_refused() -> None:
    with pytest.raises(ConfigError, match="'yes'"):
        progress_enabled("yes")  # type: ignore[arg-type]


def test_without_rich(monkeypatch: pytest.MonkeyPatch, tty: io.TextIOWrapper) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)  # as if rich were not installed
    assert progress_enabled(None, tty) is False
    with pytest.raises(ConfigError, match=r"rushpy\[progress\]"):
        progress_enabled(True)


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=120, color_system=None), out


def test_rendered_counts() -> None:
    console, out = _console()
    with TaskProgress("grid", console=console) as bar:
        bar.update(finished=3, failed=1, running=2, queued=4)
    text = out.getvalue()
    assert "grid" in text
    assert "4/10" in text  # finished + failed of the total
    assert "3 finished, 1 failed, 2 running, 4 queued" in text
    bar.close()  # idempotent


def test_counts_are_whole_on_a_narrow_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80, color_system=None)
    with TaskProgress("wait_for_tasks", console=console) as bar:
        bar.update(finished=100, failed=0, running=0, queued=0)
    drawn = [line for line in out.getvalue().replace("\r", "\n").splitlines() if "wait_for_tasks" in line]
    assert "100/100 100 finished, 0 failed, 0 running, 0 queued 0:00:0" in drawn[-1]


def test_total_given_up_front() -> None:
    console, out = _console()
    with TaskProgress("evals", console=console, total=50) as bar:
        bar.update(finished=2, failed=1, running=4, queued=0)
    assert "3/50" in out.getvalue()


def test_observe_adds_closed_keys_and_takes_open_ones_as_they_are() -> None:
    console, out = _console()
    bar = TaskProgress(console=console)
    bar.observe(["finished", "running", "queued", "queued"])  # four open keys
    assert bar.total == 4
    assert bar.counts == {"finished": 1, "failed": 0, "running": 1, "queued": 2}
    bar.observe(["failed", "finished", "running"])  # the three still open
    assert bar.counts == {"finished": 2, "failed": 1, "running": 1, "queued": 0}
    bar.close()
    assert "2 finished, 1 failed, 1 running, 0 queued" in out.getvalue()


def test_nothing_drawn_before_the_first_count() -> None:
    console, out = _console()
    TaskProgress(console=console).close()
    assert out.getvalue() == ""


def test_task_progress_switch() -> None:
    with task_progress(False, "x") as on_states:
        assert on_states is None
    with task_progress(True, "x") as on_states:
        assert on_states is not None


async def test_wait_for_tasks_draws_counts(
    controller: Controller, capsys: pytest.CaptureFixture[str]
) -> None:
    await controller.start_local_workers(2, fun="tests.funcs:fail_on_odd")
    keys = await controller.push_tasks([{"x": i} for i in range(5)])
    table = await controller.wait_for_tasks(keys, timeout=60, progress=True)
    assert len(table) == 5
    err = capsys.readouterr().err
    assert "wait_for_tasks" in err
    assert "3 finished, 2 failed, 0 running, 0 queued" in err


async def test_as_completed_draws_counts(controller: Controller, capsys: pytest.CaptureFixture[str]) -> None:
    await controller.start_local_workers(1, fun="tests.funcs:square")
    keys = await controller.push_tasks([{"x": i} for i in range(3)])
    rows = [row async for row in controller.as_completed(keys, timeout=60, progress=True)]
    assert len(rows) == 3
    err = capsys.readouterr().err
    assert "as_completed" in err
    assert "3 finished, 0 failed, 0 running, 0 queued" in err


async def test_quiet_by_default_and_when_off(
    controller: Controller, capsys: pytest.CaptureFixture[str]
) -> None:
    await controller.start_local_workers(1, fun="tests.funcs:square")
    keys = await controller.push_tasks([{"x": 1}, {"x": 2}])
    await controller.wait_for_tasks(keys, timeout=60)  # standard error is no terminal here
    await controller.wait_for_tasks(keys, timeout=60, progress=False)
    assert [r async for r in controller.as_completed(keys, timeout=60)]
    assert capsys.readouterr().err == ""
