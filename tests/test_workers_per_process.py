"""``python -m rushpy.worker --workers-per-process N``: N registered workers as coroutines, one sidecar."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from rushpy import Controller, RedisConfig
from rushpy.errors import ConfigError
from rushpy.spec import WorkerSpec
from tests.helpers import eventually, never_lost_while_running, spawn_cli, wait_exit
from tests.test_crash_restart import worker_states
from tests.test_heartbeat import one_sidecar

Spawn = Callable[[list[str]], subprocess.Popen[bytes]]


@pytest.fixture
def spawn(config: RedisConfig, tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> Spawn:
    """Start ``python -m rushpy.worker ARGS`` on the test server (killed at the end if still running)."""
    return lambda args: spawn_cli(config, args, tmp_path, processes)


def test_the_flag_is_checked_and_round_trips() -> None:
    spec = WorkerSpec.from_argv(["--network", "n", "--fun", "m:f", "--workers-per-process", "8"])
    assert spec.workers_per_process == 8
    assert WorkerSpec.from_argv(spec.to_argv()) == spec
    with pytest.raises(ConfigError, match="invalid workers_per_process=0"):
        WorkerSpec(network_id="n", fun="m:f", workers_per_process=0)


async def test_one_process_runs_many_registered_workers_with_one_sidecar(
    controller: Controller, network_id: str, spawn: Spawn
) -> None:
    args = ["--network", network_id, "--fun", "tests.funcs:async_sleepy", "--worker-id", "grp"]
    args += ["--workers-per-process", "5", "--heartbeat-period", "0.25", "--heartbeat-expire", "1"]
    proc = spawn(args)
    ids = [f"grp-{i}" for i in range(1, 6)]
    await controller.wait_for_workers(worker_ids=ids, timeout=30)
    # One sidecar beats for all five (its command line names each), not one per worker.
    sidecar = await one_sidecar(proc.pid)
    cmdline = Path(f"/proc/{sidecar}/cmdline").read_bytes().split(b"\0")
    assert sorted(cmdline[i + 1].decode() for i, arg in enumerate(cmdline) if arg == b"--worker-id") == ids
    keys = await controller.push_tasks([{"x": i, "duration": 0.2} for i in range(25)])
    table = await controller.wait_for_tasks(keys, timeout=60)
    assert table["y"] == list(range(25))
    assert set(table["pid"]) == {proc.pid}, "every worker runs in the one process"
    assert set(table["worker_id"]) == set(ids), "each worker pops tasks of its own"
    info = await controller.worker_info()
    assert set(info["pid"]) == {proc.pid} and set(info["heartbeat"]) == {True}
    # Registrations reach the controller only: n workers registering must not send n x n messages.
    keys = controller._keys
    client = controller._store.client
    assert dict(await client.pubsub_numsub(keys.worker_events, keys.events)) == {
        keys.worker_events.encode(): 1,
        keys.events.encode(): 6,  # every worker hears cancellations and resets
    }
    proc.send_signal(signal.SIGTERM)  # terminates every worker of the process
    assert await wait_exit(proc) == 0
    assert await worker_states(controller) == dict.fromkeys(ids, "terminated")


async def test_the_shared_sidecar_keeps_every_worker_while_the_loop_is_blocked(
    controller: Controller, network_id: str, spawn: Spawn
) -> None:
    expire = 1.0
    args = ["--network", network_id, "--fun", "tests.crash_funcs:hold_gil", "--worker-id", "blk"]
    args += ["--workers-per-process", "3", "--heartbeat-period", "0.25", "--heartbeat-expire", str(expire)]
    proc = spawn(args)
    ids = ["blk-1", "blk-2", "blk-3"]
    await controller.wait_for_workers(worker_ids=ids, timeout=30)
    await one_sidecar(proc.pid)
    # One C call that keeps the GIL for 5 expiries: every worker's beat from the loop stops.
    [key] = await controller.push_tasks([{"seconds": int(5 * expire)}])
    checks = await never_lost_while_running(controller, key)
    assert checks >= 20, "the function should have run for about 5 s"
    assert (await controller.wait_for_tasks([key], timeout=30))["slept"] == [5]
    assert await worker_states(controller) == dict.fromkeys(ids, "running")
    await controller.stop_workers()
    assert await wait_exit(proc) == 0


# -- start_local_workers(workers_per_process=...) ---------------------------------------------------
async def test_local_workers_share_processes_and_one_killed_leaves_the_others_running(
    controller: Controller,
) -> None:
    ids = await controller.start_local_workers(
        5, fun="tests.funcs:async_sleepy", workers_per_process=2, heartbeat_period=0.5
    )
    await controller.wait_for_workers(5, timeout=60)
    info = {row["worker_id"]: row for row in await controller.worker_info()}
    assert sorted(info) == sorted(ids)
    pids = [int(info[w]["pid"]) for w in ids]
    assert sorted(pids.count(p) for p in set(pids)) == [1, 2, 2]  # two processes of 2, one of 1
    shared = next(w for w in ids if w.endswith("-1"))
    partner = shared[:-2] + "-2"
    assert int(info[partner]["pid"]) == int(info[shared]["pid"])
    keys = await controller.push_tasks([{"x": i, "duration": 0.05} for i in range(40)], max_retries=2)
    result = await controller.stop_workers("kill", worker_ids=[shared])
    assert result.stopped == [shared]
    table = await controller.wait_for_tasks(keys, timeout=60, detect_lost_workers=True)
    assert table["y"] == list(range(40))
    states = await worker_states(controller)
    assert states[shared] == "killed"
    # Its partner in the same process runs on and keeps taking tasks.
    assert states[partner] == "running" and controller.local_workers[partner].process.poll() is None
    more = await controller.push_tasks([{"x": i, "duration": 0} for i in range(20)])
    await controller.wait_for_tasks(more, timeout=60, detect_lost_workers=True)
    assert await controller.detect_lost_workers() == []


async def test_a_lost_process_of_many_workers_is_replaced_by_one_process_of_as_many(
    controller: Controller,
) -> None:
    ids = await controller.start_local_workers(
        2, fun="tests.funcs:async_sleepy", workers_per_process=2, heartbeat_period=0.5
    )
    await controller.wait_for_workers(2, timeout=60)
    process = controller.local_workers[ids[0]].process
    assert controller.local_workers[ids[1]].process is process
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    found = await controller.detect_lost_workers(restart_local_workers=True)
    assert sorted(found) == sorted(ids)
    new = [w for w in controller.local_workers if w not in ids]
    assert len(new) == 2 and {w.rsplit("-", 1)[1] for w in new} == {"1", "2"}
    assert controller.local_workers[new[0]].process is controller.local_workers[new[1]].process
    await controller.wait_for_workers(2, timeout=60)  # the new ones
    keys = await controller.push_tasks([{"x": i, "duration": 0} for i in range(10)])
    table = await controller.wait_for_tasks(keys, timeout=60)
    assert set(table["worker_id"]) <= set(new)


async def test_worker_processes_collect_garbage_less_often_and_the_controller_is_left_alone(
    controller: Controller,
) -> None:
    import gc

    from rushpy.worker.process import GC_THRESHOLDS

    before = gc.get_threshold()
    await controller.start_local_workers(1, fun="tests.funcs:gc_settings")
    [key] = await controller.push_tasks([{}])
    row = (await controller.wait_for_tasks([key], timeout=60)).rows[0]
    assert row["threshold"] == list(GC_THRESHOLDS) and row["frozen"] > 1000  # start-up objects frozen
    assert gc.get_threshold() == before  # the controller's process is not the worker's


async def test_a_crashed_worker_of_a_shared_process_is_replaced_and_its_partner_goes_on(
    controller: Controller,
) -> None:
    ids = await controller.start_local_workers(
        2, worker_loop="tests.loop_funcs:first_crashes", workers_per_process=2, heartbeat_period=0.5
    )
    crashed = next(w for w in ids if w.endswith("-1"))
    partner = next(w for w in ids if w != crashed)
    process = controller.local_workers[partner].process
    found: list[str] = []

    async def replaced() -> bool:
        found.extend(await controller.detect_lost_workers(restart_local_workers=True))
        return crashed in found

    await eventually(replaced, "the crashed worker is found and replaced", timeout=30)
    assert found == [crashed]
    # Its process still runs the partner: it was not killed with the crashed worker.
    assert process.poll() is None and controller.local_workers[partner].process is process
    [new] = [w for w in controller.local_workers if w not in ids]
    assert controller.local_workers[new].process is not process
    await controller.wait_for_workers(worker_ids=[new, partner], timeout=60)
    assert (await worker_states(controller))[crashed] == "lost"
