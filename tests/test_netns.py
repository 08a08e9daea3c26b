"""Many hosts: workers in their own network namespaces; one host's link cut past its heartbeat expiry.

The server listens on the test's side of each host's veth link (and on
loopback for the controller). While tasks run, one host's link goes down for
longer than its worker's heartbeat expiry: the controller declares it lost
and re-queues its tasks, the other host runs them, and when the link comes
back the cut-off worker's late results are refused (attempt fence) and it
rejoins. Nothing is lost and nothing is recorded twice.
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from rushpy import Controller, EmbeddedServer, RedisConfig
from tests.helpers import eventually, worker_env
from tests.netns import NetnsLab
from tests.test_crash_restart import finished_list, worker_row, worker_states

PASSWORD = "netns-" + uuid.uuid4().hex
EXPIRE = 1.0  # heartbeat expiry of the workers, seconds


@pytest.fixture(scope="module")
def lab() -> Iterator[NetnsLab]:
    with NetnsLab(2) as hosts:
        yield hosts


@pytest.fixture(scope="module")
def far_server(lab: NetnsLab) -> Iterator[EmbeddedServer]:
    """Listening on loopback and on this side of every host's link (with a password: not loopback only)."""
    with EmbeddedServer(password=PASSWORD, extra_args=["--bind", "127.0.0.1", *lab.server_addresses]) as srv:
        yield srv


def _start_host_worker(
    lab: NetnsLab, i: int, server: EmbeddedServer, network_id: str, tmp_path: Path
) -> subprocess.Popen[bytes]:
    config = RedisConfig(host=lab.hosts[i].server_address, port=server.port, password=PASSWORD)
    args = ["--network", network_id, "--fun", "tests.funcs:sleepy", "--worker-id", f"host-{i}"]
    args += ["--heartbeat-period", str(EXPIRE / 4), "--heartbeat-expire", str(EXPIRE)]
    return lab.spawn_worker(i, args, worker_env(config), tmp_path / f"host-{i}.log")


@contextlib.asynccontextmanager
async def _hosts_running(lab: NetnsLab, server: EmbeddedServer, tmp_path: Path) -> AsyncIterator[Controller]:
    """A controller on loopback and one worker per host, registered; workers stopped (or killed) after."""
    network_id = f"netns-{uuid.uuid4().hex[:10]}"
    workers: list[subprocess.Popen[bytes]] = []
    try:
        async with Controller(network_id, config=server.config, shutdown_timeout=10) as rush:
            workers = [_start_host_worker(lab, i, server, network_id, tmp_path) for i in range(2)]
            await rush.wait_for_workers(worker_ids=["host-0", "host-1"], timeout=60)
            yield rush
            await rush.stop_workers()
            for proc in workers:
                assert await anyio.to_thread.run_sync(proc.wait, 30) == 0
            await rush.reset(workers=True)
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


async def _running_on(rush: Controller, worker_id: str) -> list[str]:
    return list((await worker_row(rush, worker_id))["running"] or [])


async def test_a_partitioned_host_loses_its_tasks_to_others_and_rejoins(
    lab: NetnsLab, far_server: EmbeddedServer, tmp_path: Path
) -> None:
    async with _hosts_running(lab, far_server, tmp_path) as rush:
        keys = await rush.push_tasks([{"x": i, "duration": 0.2} for i in range(40)], max_retries=3)
        cut: list[str] = []

        async def host_0_runs_something() -> bool:
            cut[:] = await _running_on(rush, "host-0")
            return bool(cut)

        await eventually(host_0_runs_something, "host-0 runs a task", timeout=30)
        lab.partition(0)
        try:
            # The controller finds host-0 lost once its heartbeat expires, and re-queues its tasks.
            async def host_0_lost() -> bool:
                await rush.detect_lost_workers()
                return (await worker_states(rush))["host-0"] == "lost"

            await eventually(host_0_lost, "host-0 declared lost", timeout=EXPIRE * 10)
            # Its tasks are run by the other host while the link is still down.
            await rush.wait_for_tasks(cut, timeout=60)
        finally:
            lab.restore(0)
        table = await rush.wait_for_tasks(keys, timeout=120)
        rows: dict[str, Any] = {row["key"]: row for row in table.rows}
        assert [rows[k]["state"] for k in keys] == ["finished"] * 40
        assert [rows[k]["y"] for k in keys] == list(range(40))
        # The tasks host-0 held when cut off: recorded once, by host-1, in a later attempt;
        # host-0's own results for them came too late and were refused.
        assert {rows[k]["worker_id"] for k in cut} == {"host-1"}
        assert all(rows[k]["attempts"] >= 2 for k in cut)
        finished = await finished_list(rush)
        assert sorted(finished) == sorted(keys), "every task recorded exactly once"

        # host-0 rejoins once its link is back, and takes work again.
        async def host_0_back() -> bool:
            return (await worker_states(rush))["host-0"] == "running"

        await eventually(host_0_back, "host-0 running again", timeout=60)
        assert (await worker_row(rush, "host-0"))["rejoins"] >= 1
        more = await rush.push_tasks([{"x": i, "duration": 0.05} for i in range(40)])
        later = await rush.wait_for_tasks(more, timeout=60)
        assert later["y"] == list(range(40))
        assert set(later["worker_id"]) == {"host-0", "host-1"}
    log = (tmp_path / "host-0.log").read_text()
    assert "outcomes discarded" in log and "declared lost although it is alive" in log


async def test_a_blip_shorter_than_the_heartbeat_expiry_costs_nothing(
    lab: NetnsLab, far_server: EmbeddedServer, tmp_path: Path
) -> None:
    async with _hosts_running(lab, far_server, tmp_path) as rush:
        keys = await rush.push_tasks([{"x": i, "duration": 0.1} for i in range(30)], max_retries=3)
        for _ in range(3):  # three short cuts while tasks run
            await eventually(lambda: _running_on(rush, "host-0"), "host-0 runs a task", timeout=30)
            lab.partition(0)
            await anyio.sleep(EXPIRE / 4)
            lab.restore(0)
            assert await rush.detect_lost_workers() == []
        table = await rush.wait_for_tasks(keys, timeout=60)
        assert table["y"] == list(range(30))
        assert set(table["attempts"]) == {1}, "no task ran twice"
        assert sorted(await finished_list(rush)) == sorted(keys)
        assert await worker_states(rush) == {"host-0": "running", "host-1": "running"}
        assert "rejoins" not in await worker_row(rush, "host-0")
