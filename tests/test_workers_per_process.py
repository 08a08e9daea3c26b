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
from tests.helpers import never_lost_while_running, spawn_cli, wait_exit
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
