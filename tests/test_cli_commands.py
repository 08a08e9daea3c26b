"""Every ``rushpy`` command against a live network with workers: tables for people, ``--json`` for scripts.

Most commands run in this process (``rushpy.cli.main`` in a thread, output
captured); ``--watch`` and ``--follow`` run as processes that are interrupted
like a user would (SIGINT).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import redis.asyncio

import rushpy
from rushpy import Controller, RedisConfig
from rushpy.cli import main
from rushpy.cli.output import Output
from tests.helpers import eventually
from tests.test_cli import REPO, dead_port, env_for

pytestmark = pytest.mark.usefixtures("anyio_backend")


class Cli:
    """Runs ``rushpy`` commands on the test server, in this process."""

    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str) -> None:
        self._capsys = capsys
        monkeypatch.setenv("RUSHPY_REDIS_URL", url)
        monkeypatch.delenv("REDIS_URL", raising=False)
        monkeypatch.setenv("COLUMNS", "200")  # rich sizes tables to the terminal: a wide one here

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        self._capsys.readouterr()
        code = await anyio.to_thread.run_sync(_exit_code, list(args))
        out, err = self._capsys.readouterr()
        return code, out, err

    async def json(self, *args: str) -> Any:
        code, out, err = await self(*args, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: RedisConfig) -> Cli:
    return Cli(capsys, monkeypatch, config.to_url(include_password=True))


async def test_list_names_the_network_with_its_counts(cli: Cli, controller: Controller, study: Any) -> None:
    found = {row["network"]: row for row in await cli.json("list")}
    row = found[controller.network_id]
    assert (row["n_finished_tasks"], row["n_failed_tasks"], row["n_running_workers"]) == (3, 3, 2)
    code, out, _ = await cli("list")
    assert code == 0 and controller.network_id in out and "finished" in out
    code, out, _ = await cli("list", "--prefix", "elsewhere")
    assert code == 0 and "no networks with prefix 'elsewhere'" in out


async def test_status_counts_per_state_and_per_worker(cli: Cli, controller: Controller, study: Any) -> None:
    found = await cli.json("status", controller.network_id)
    assert found["counts"]["n_finished_tasks"] == 3 and found["counts"]["n_failed_tasks"] == 3
    per_worker = {w["worker_id"]: w for w in found["workers"]}
    assert set(per_worker) == set(study["workers"])
    assert sum(w["n_finished"] for w in per_worker.values()) == 3
    code, out, _ = await cli("status", controller.network_id)
    assert code == 0 and "finished" in out and all(w in out for w in study["workers"])


async def test_an_unknown_network_and_an_unreachable_server_say_what_to_do(
    cli: Cli, controller: Controller, study: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for command in ("status", "workers", "tasks", "logs", "stop", "reset"):
        code, out, err = await cli(command, "no-such-network")
        assert code == 2 and out == ""
        assert err.startswith("rushpy: error: no network 'no-such-network'") and "rushpy list" in err
    code, _, err = await cli("status")
    assert code == 2 and "name the network" in err
    monkeypatch.setenv("RUSHPY_REDIS_URL", f"redis://127.0.0.1:{dead_port()}/0")
    code, _, err = await cli("status", controller.network_id)
    assert code == 2 and "RUSHPY_REDIS_URL" in err and "Traceback" not in err


async def test_workers_shows_state_host_pid_and_counts(cli: Cli, controller: Controller, study: Any) -> None:
    rows = await cli.json("workers", controller.network_id)
    assert {r["worker_id"] for r in rows} == set(study["workers"])
    assert {r["state"] for r in rows} == {"running"} and all(r["pid"] for r in rows)
    failing = [r for r in rows if r["n_failed"]]
    assert failing and "odd input" in failing[0]["last_error"]
    code, out, _ = await cli("workers", controller.network_id)
    assert code == 0 and all(w in out for w in study["workers"]) and "ValueError" in out


async def test_tasks_filters_by_state_and_limits(cli: Cli, controller: Controller, study: Any) -> None:
    failed = await cli.json("tasks", controller.network_id, "--state", "failed")
    assert sorted(r["x"] for r in failed) == [1, 3, 5] and {r["state"] for r in failed} == {"failed"}
    both = await cli.json("tasks", controller.network_id, "--state", "failed", "--state", "finished")
    assert len(both) == 6
    last = await cli.json("tasks", controller.network_id, "--limit", "2")
    assert [r["key"] for r in last] == study["keys"][-2:]
    code, out, _ = await cli("tasks", controller.network_id, "--limit", "2")
    assert code == 0 and "last 2 of 6 tasks" in out and study["keys"][-1] in out
    code, _, err = await cli("tasks", controller.network_id, "--limit", "-1")
    assert code == 2 and "--limit" in err
    code, _, err = await cli("tasks", controller.network_id, "--state", "sleeping")
    assert code == 2 and "invalid choice" in err


async def test_task_shows_one_task_with_its_traceback(cli: Cli, controller: Controller, study: Any) -> None:
    key = study["keys"][1]  # x=1 failed
    row = await cli.json("task", controller.network_id, key)
    assert row["state"] == "failed" and row["x"] == 1
    assert "ValueError: odd input 1" in row["conditions"][-1]["traceback"]
    code, out, _ = await cli("task", controller.network_id, key)
    assert code == 0 and "condition 1 of 1" in out and "Traceback (most recent call last)" in out
    code, _, err = await cli("task", controller.network_id, "no-such-key")
    assert code == 2 and "no-such-key" in err


async def test_logs_by_worker_and_level(cli: Cli, controller: Controller, study: Any) -> None:
    async def logged() -> bool:
        rows = await controller.read_log()
        return sum(r["event"] == "task failed" for r in rows) == 3

    await eventually(logged, "the failures are in the log", timeout=10)
    rows = await cli.json("logs", controller.network_id, "--limit", "0")
    assert json.loads(json.dumps(rows)) == rows and {r["worker_id"] for r in rows} <= set(study["workers"])
    warnings = await cli.json("logs", controller.network_id, "--level", "warning", "--limit", "0")
    assert {r["level"] for r in warnings} == {"warning"} and len(warnings) == 3
    one = study["workers"][0]
    mine = await cli.json("logs", controller.network_id, "--worker", one, "--limit", "0")
    assert mine and {r["worker_id"] for r in mine} == {one}
    assert len(await cli.json("logs", controller.network_id, "--limit", "2")) == 2
    code, out, _ = await cli("logs", controller.network_id, "--level", "warning")
    assert code == 0 and out.count("task failed") == 3


def _spawn(config: RedisConfig, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rushpy", *args],
        cwd=REPO,
        env=env_for(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _interrupt(process: subprocess.Popen[str], after: float) -> tuple[int, list[str], str]:
    time.sleep(after)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    return process.returncode, out.splitlines(), err


async def test_status_watch_prints_until_interrupted(
    controller: Controller, study: Any, config: RedisConfig
) -> None:
    process = _spawn(config, "status", controller.network_id, "--watch", "--interval", "0.3", "--json")
    more = await controller.push_tasks([{"x": 10}])
    await controller.wait_for_tasks(more, timeout=30)
    code, lines, err = await anyio.to_thread.run_sync(_interrupt, process, 2.0)
    assert code == 130 and "Traceback" not in err
    counts = [json.loads(line)["counts"]["n_finished_tasks"] for line in lines]
    assert len(counts) >= 3 and counts[-1] == 4  # it kept looking, and saw the new result


async def test_logs_follow_prints_new_records_once(
    controller: Controller, study: Any, config: RedisConfig
) -> None:
    args = ["logs", controller.network_id, "--follow", "--interval", "0.2", "--level", "warning"]
    process = _spawn(config, *args)
    await anyio.sleep(1.0)
    more = await controller.push_tasks([{"x": 7}, {"x": 9}])
    await controller.wait_for_tasks(more, timeout=30)
    await anyio.sleep(1.5)  # the workers write their log every 0.5 s
    code, lines, err = await anyio.to_thread.run_sync(_interrupt, process, 0.5)
    assert code == 130 and "Traceback" not in err
    failures = [line for line in lines if "task failed" in line]
    assert len(failures) == 5 and len(set(failures)) == 5  # 3 before, 2 new, none twice
    assert any("odd input 9" in line for line in failures)


async def test_stop_terminates_or_kills_named_workers(cli: Cli, controller: Controller, study: Any) -> None:
    first, second = study["workers"]
    assert await cli.json("stop", controller.network_id, "--worker", first) == {
        "stopped": [first],
        "unknown": [],
        "not_running": [],
    }

    async def terminated() -> bool:
        return (await _states(controller))[first] == "terminated"

    await eventually(terminated, "the worker terminates", timeout=30)
    code, out, _ = await cli("stop", controller.network_id, "--kill", "--worker", second, "--worker", "x")
    assert code == 2 and f"killed: {second}" in out and "unknown: x" in out
    assert (await _states(controller))[second] == "killed"


async def _states(controller: Controller) -> dict[str, str]:
    info = await controller.worker_info()
    return dict(zip(info["worker_id"], info["state"], strict=True))


async def test_cancel_and_retry(cli: Cli, controller: Controller, study: Any) -> None:
    # No worker left to take the new task: it stays queued until cancelled.
    await controller.stop_workers()

    async def stopped() -> bool:
        return set((await _states(controller)).values()) == {"terminated"}

    await eventually(stopped, "the workers terminate", timeout=30)
    [queued] = await controller.push_tasks([{"x": 4}])
    found = await cli.json("cancel", controller.network_id, queued, study["keys"][0])
    assert found == {"cancelled": [queued], "skipped": [study["keys"][0]]}
    assert (await controller.fetch_task(queued))["state"] == "failed"
    failed = [study["keys"][i] for i in (1, 3, 5)]
    # Their one attempt is used up (max_retries=0): only the cancelled task, never run, goes back.
    retried = await cli.json("retry", controller.network_id, "--all-failed")
    assert retried["re-queued"] == [queued] and sorted(retried["skipped"]) == sorted(failed)
    code, out, _ = await cli("retry", controller.network_id, *failed, "--ignore-max-retries")
    assert code == 0 and f"re-queued 3 task(s): {' '.join(failed)}" in out
    code, _, err = await cli("retry", controller.network_id)
    assert code == 2 and "--all-failed" in err
    assert (await controller.status()).n_queued_tasks == 4


async def test_reset_asks_and_export_import_round_trip(
    cli: Cli, controller: Controller, study: Any, tmp_path: Path, network_id: str
) -> None:
    archive = tmp_path / "study.rushpy.gz"
    summary = await cli.json("export", controller.network_id, str(archive))
    assert summary["n_tasks"] == 6 and summary["states"] == {"finished": 3, "failed": 3}
    copy = f"{network_id}-copy"
    code, out, _ = await cli("import", copy, str(archive))
    assert code == 0 and "imported 6 task(s)" in out
    assert {r["network"]: r["n_finished_tasks"] for r in await cli.json("list")}[copy] == 3
    # No terminal to ask on: reset refuses without --yes.
    code, _, err = await cli("reset", copy)
    assert code == 2 and "--yes" in err
    assert await cli.json("reset", copy, "--yes") == {"reset": copy, "kept_workers": False}
    code, _, err = await cli("status", copy)
    assert code == 2 and f"no network {copy!r}" in err


async def test_version_and_help_list_every_command(cli: Cli) -> None:
    code = await anyio.to_thread.run_sync(lambda: _exit_code(["--version"]))
    assert code == 0
    process = await anyio.run_process([sys.executable, "-m", "rushpy", "--version"], cwd=REPO, check=False)
    assert process.stdout.decode().strip() == f"rushpy {rushpy.__version__}"
    helped = await anyio.run_process([sys.executable, "-m", "rushpy", "--help"], cwd=REPO, check=False)
    text = helped.stdout.decode()
    commands = ["worker", "server", "acl", "list", "status", "workers", "tasks", "task", "logs"]
    for command in [*commands, "stop", "cancel", "retry", "reset", "export", "import"]:
        assert f"    {command} " in text or f"    {command}\n" in text, command


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_tables_without_rich_are_aligned_text(capsys: pytest.CaptureFixture[str]) -> None:
    out = Output()
    out._rich = False
    out.table([{"key": "a", "n": 1.5}, {"key": "bbbb", "n": None}], {"key": "key", "n": "value"}, title="t")
    assert capsys.readouterr().out.splitlines() == ["t", "key   value", "a     1.5", "bbbb"]


def test_the_cli_reference_documents_every_command() -> None:
    from rushpy.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    reference = (REPO / "docs" / "cli.md").read_text()
    for name in sub.choices:
        assert f"`rushpy {name}" in reference, f"docs/cli.md does not document `rushpy {name}`"


async def test_status_watch_on_a_terminal_shows_the_latest_look_only(
    controller: Controller, study: Any, config: RedisConfig
) -> None:
    import os
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "rushpy", "status", controller.network_id, "--watch", "--interval", "0.3"],
        cwd=REPO,
        env=env_for(config),
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    shown = bytearray()

    def read_for(seconds: float) -> None:
        import select

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if select.select([leader], [], [], 0.1)[0]:
                try:
                    shown.extend(os.read(leader, 65536))
                except OSError:
                    return

    try:
        await anyio.to_thread.run_sync(read_for, 2.5)
        process.send_signal(signal.SIGINT)
        assert await anyio.to_thread.run_sync(process.wait, 30) == 130
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    assert shown.count(b"\x1b[2J") >= 3  # cleared before each look
    assert controller.network_id.encode() in shown


async def test_a_corrupt_task_costs_its_own_row_only(
    cli: Cli, controller: Controller, study: Any, raw: redis.asyncio.Redis
) -> None:
    from rushpy.keys import Keys
    from tests.helpers import set_stored_field

    damaged = study["keys"][2]
    await set_stored_field(raw, Keys(controller.network_id), damaged, "ys", b"\xc1")
    rows = await cli.json("tasks", controller.network_id)
    assert len(rows) == 6 and "ys" in next(r for r in rows if r["key"] == damaged)["error"]
    code, out, _ = await cli("tasks", controller.network_id)
    assert code == 0 and damaged in out
    assert (await cli.json("task", controller.network_id, damaged))["key"] == damaged
