"""Lost workers, kills and idle exits, against the suite's real server.

A worker is lost when its heartbeat expired, or, without a heartbeat, when its
process is gone; its tasks are settled (re-queued while attempts remain, else
failed with a ``WorkerLost`` condition). A kill stops a worker at once
(``WorkerKilled``); an idle timeout lets a worker exit by itself.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

import rushpy
from rushpy import Controller, RedisConfig, Worker
from rushpy.worker import run_function
from tests import funcs
from tests.helpers import eventually as _eventually
from tests.helpers import spawn_cli, wait_exit

pytestmark = pytest.mark.anyio


# -- helpers ----------------------------------------------------------------------------------


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 10.0
) -> None:
    """:func:`tests.helpers.eventually` with this module's longer default timeout."""
    await _eventually(predicate, what, timeout)


async def detect_until_found(controller: Controller, timeout: float = 10.0, **kwargs: Any) -> list[str]:
    """Call ``detect_lost_workers`` until it reports workers; return what that call found."""
    with anyio.fail_after(timeout):
        while True:
            found = await controller.detect_lost_workers(**kwargs)
            if found:
                return found
            await anyio.sleep(0.05)


def by_key(table: rushpy.Table) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in table}


async def rows(controller: Controller) -> dict[str, dict[str, Any]]:
    return by_key(await controller.fetch_tasks())


async def worker_states(controller: Controller) -> dict[str, str]:
    info = await controller.worker_info()
    return dict(zip(info["worker_id"], info["state"], strict=True))


async def shared_queue(controller: Controller) -> list[str]:
    """Keys in the shared queue itself (not in any worker's pending list)."""
    return [k.decode() for k in await controller._store.client.lrange(controller._keys.queued, 0, -1)]


async def heartbeat_exists(controller: Controller, worker_id: str) -> bool:
    return bool(await controller._store.client.exists(controller._keys.heartbeat(worker_id)))


async def wait_until_running(controller: Controller, *keys: str) -> None:
    async def running() -> bool:
        return all(await controller.is_running_task(list(keys)))

    await eventually(running, f"tasks {keys} run", timeout=20)


def dead_pid() -> int:
    """The id of a process that has exited (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def last_condition(row: dict[str, Any]) -> dict[str, Any]:
    conditions = row.get("conditions") or []
    assert conditions, row
    return dict(conditions[-1])


async def stop_beating(worker: Worker) -> None:
    """Pause the heartbeat of an in-process worker (as a long stall would)."""
    heartbeat = worker._heartbeat
    assert heartbeat is not None
    heartbeat.stop()
    await anyio.sleep(0)


# -- detect_lost_workers: what counts as lost ---------------------------------------------------


async def test_expired_heartbeat_is_lost_and_its_tasks_are_settled(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config, heartbeat_period=0.1, heartbeat_expire=0.3) as w:
        [retried] = await controller.push_tasks([{"x": 1}], max_retries=1)
        [final] = await controller.push_tasks([{"x": 2}])
        popped = await w.pop_tasks(2, timeout=5)
        assert sorted(t.key for t in popped) == sorted([retried, final])
        # A third task is popped but not yet claimed: it sits in the pending list.
        [pending] = await controller.push_tasks([{"x": 3}])
        assert await w._store.tasks.pop_keys(w.worker_id, 1) == [pending]
        # A fourth waits in the worker's own priority queue.
        [mine] = await controller.push_priority_tasks([{"x": 4}], priority=[w.worker_id])

        # While it beats, the worker is not lost.
        assert await controller.detect_lost_workers() == []
        assert (await worker_states(controller))[w.worker_id] == "running"

        await stop_beating(w)
        await eventually(lambda: _not(heartbeat_exists(controller, w.worker_id)), "the heartbeat key expires")
        assert await controller.detect_lost_workers() == [w.worker_id]
        assert await controller.detect_lost_workers() == [], "each lost worker is reported once"
        assert (await worker_states(controller))[w.worker_id] == "lost"

        table = await rows(controller)
        # Attempts left: back to the queue, with the loss in its history.
        assert table[retried]["state"] == "queued"
        assert table[retried]["attempts"] == 1
        assert last_condition(table[retried])["type"] == "WorkerLost"
        # No attempts left: failed, naming the worker.
        assert table[final]["state"] == "failed"
        condition = table[final]["condition"]
        assert condition["type"] == "WorkerLost"
        assert w.worker_id in condition["message"]
        assert "lost" in condition["message"]
        # Popped but never claimed: back in the shared queue, no attempt used.
        assert table[pending]["state"] == "queued"
        assert table[pending].get("attempts") is None
        # Its priority queue moved to the shared queue: no task waits for a lost worker.
        assert table[mine]["state"] == "queued"
        assert await controller._store.client.llen(controller._keys.priority_queue(w.worker_id)) == 0
        assert set(await shared_queue(controller)) == {retried, pending, mine}
        status = await controller.status()
        assert status.n_running_tasks == 0
        assert status.n_lost_workers == 1
        assert status.n_running_workers == 0


async def _not(value: Awaitable[bool]) -> bool:
    return not await value


async def test_killed_local_worker_process_is_lost(controller: Controller) -> None:
    [wid] = await controller.start_local_workers(1, fun=funcs.sleepy)
    await controller.wait_for_workers(1, timeout=30)
    keys = await controller.push_tasks([{"x": 1, "duration": 60}, {"x": 2}], max_retries=1)
    await wait_until_running(controller, keys[0])
    assert await controller.detect_lost_workers() == []

    process = controller.local_workers[wid].process
    process.kill()
    assert await wait_exit(process) == -signal.SIGKILL
    assert await controller.detect_lost_workers() == [wid]
    assert await controller.detect_lost_workers() == []
    assert (await worker_states(controller))[wid] == "lost"
    table = await rows(controller)
    assert table[keys[0]]["state"] == "queued"
    assert table[keys[0]]["attempts"] == 1
    condition = last_condition(table[keys[0]])
    assert condition["type"] == "WorkerLost"
    assert wid in condition["message"]
    assert table[keys[1]]["state"] == "queued"
    assert set(await shared_queue(controller)) == set(keys)


async def test_worker_without_heartbeat_whose_process_is_gone_is_lost(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    store = controller._store
    host = socket.gethostname()
    gone = "dead-pid-worker"
    await store.workers.register_worker(gone, {"pid": dead_pid(), "hostname": host, "heartbeat": False})
    # Elsewhere a dead pid says nothing: a worker on another host is left alone.
    remote = "remote-worker"
    await store.workers.register_worker(
        remote, {"pid": dead_pid(), "hostname": f"not-{host}", "heartbeat": False}
    )
    [key] = await controller.push_tasks([{"x": 1}])
    assert await store.tasks.pop_keys(gone, 1) == [key]
    [claimed] = await store.tasks.claim(gone, [key])
    assert claimed.key == key

    # A worker without heartbeat whose process lives (this one) is not lost either.
    async with Worker(network_id, config=config) as alive:
        assert await controller.detect_lost_workers() == [gone]
        assert await controller.detect_lost_workers() == []
        states = await worker_states(controller)
        assert states == {gone: "lost", remote: "running", alive.worker_id: "running"}
    row = (await rows(controller))[key]
    assert row["state"] == "failed"
    assert row["condition"]["type"] == "WorkerLost"
    assert gone in row["condition"]["message"]
    assert "lost" in row["condition"]["message"]


async def test_paused_local_worker_is_lost_and_comes_back_when_it_resumes(
    controller: Controller, processes: list[subprocess.Popen[bytes]]
) -> None:
    [wid] = await controller.start_local_workers(
        1, fun=funcs.sleepy, heartbeat_period=0.1, heartbeat_expire=0.5
    )
    await controller.wait_for_workers(1, timeout=30)
    process = controller.local_workers[wid].process
    processes.append(process)
    [key] = await controller.push_tasks([{"x": 7, "duration": 1.0}], max_retries=1)
    await wait_until_running(controller, key)

    # Stopped: neither its loop nor its heartbeat sidecar beats.
    process.send_signal(signal.SIGSTOP)
    assert await detect_until_found(controller) == [wid]
    assert (await rows(controller))[key]["state"] == "queued"

    process.send_signal(signal.SIGCONT)
    # Alive again: it re-registers and runs the re-queued task as a new attempt; the
    # result of the attempt it held when it was stopped is discarded.
    table = await controller.wait_for_tasks([key], timeout=30)
    assert process.poll() is None, controller.local_workers[wid].log_tail()
    assert (await worker_states(controller))[wid] == "running"
    assert table[0]["y"] == 7
    assert table[0]["attempts"] == 2
    assert last_condition(table[0])["type"] == "WorkerLost"
    assert await controller._store.client.lrange(controller._keys.finished, 0, -1) == [key.encode()]


async def test_tasks_arriving_after_a_paused_worker_was_lost_are_not_stuck(
    controller: Controller, config: RedisConfig, network_id: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    [wid] = await controller.start_local_workers(
        1, fun=funcs.square, heartbeat_period=0.1, heartbeat_expire=0.5
    )
    await controller.wait_for_workers(1, timeout=30)
    # Let the idle worker block on the queue, then freeze it there.
    [warmup] = await controller.push_tasks([{"x": 1}])
    await controller.wait_for_tasks([warmup], timeout=20)
    await anyio.sleep(0.3)
    process = controller.local_workers[wid].process
    processes.append(process)
    process.send_signal(signal.SIGSTOP)
    assert await detect_until_found(controller) == [wid]

    keys = await controller.push_tasks([{"x": 2}, {"x": 3}])
    # The frozen worker's blocked pop may still move a new task into its pending
    # list; detection must give it back, or it would wait for a worker that is gone.
    async with Worker(network_id, config=config) as other, anyio.create_task_group() as tg:
        tg.start_soon(run_function, other, funcs.square)
        try:
            table = await controller.wait_for_tasks(keys, timeout=15, detect_lost_workers=True)
        finally:
            other.set_terminated()
    assert table["state"] == ["finished", "finished"]
    assert table["y"] == [4, 9]
    assert set(table["worker_id"]) == {other.worker_id}


# -- restarting lost local workers ------------------------------------------------------------


async def test_restart_replaces_a_lost_local_worker(controller: Controller) -> None:
    [wid] = await controller.start_local_workers(1, fun=funcs.sleepy)
    await controller.wait_for_workers(1, timeout=30)
    keys = await controller.push_tasks(
        [{"x": 1, "duration": 1.0}] + [{"x": i, "duration": 0.05} for i in range(2, 5)], max_retries=1
    )
    await wait_until_running(controller, keys[0])
    controller.local_workers[wid].process.kill()
    await wait_exit(controller.local_workers[wid].process)

    assert await controller.detect_lost_workers(restart_local_workers=True) == [wid]
    assert wid not in controller.local_workers
    [new] = list(controller.local_workers)
    assert new != wid
    table = await controller.wait_for_tasks(keys, timeout=30)
    assert table["state"] == ["finished"] * 4
    assert set(table["worker_id"]) == {new}
    assert table[0]["attempts"] == 2
    assert last_condition(table[0])["type"] == "WorkerLost"
    states = await worker_states(controller)
    assert states[wid] == "lost"
    assert states[new] == "running"


async def test_background_detection_replaces_a_killed_local_worker(
    config: RedisConfig, network_id: str
) -> None:
    async with Controller(
        network_id, config=config, detect_lost_every=0.2, restart_lost_workers=True, shutdown_timeout=5
    ) as rush:
        try:
            [wid] = await rush.start_local_workers(1, fun=funcs.sleepy)
            await rush.wait_for_workers(1, timeout=30)
            keys = await rush.push_tasks([{"x": i, "duration": 0.3} for i in range(6)], max_retries=1)
            await wait_until_running(rush, keys[0])
            victim = rush.local_workers[wid].process
            victim.kill()
            await wait_exit(victim)
            # Nobody calls detect_lost_workers here: the controller does it by itself.
            table = await rush.wait_for_tasks(keys, timeout=40)
            assert table["state"] == ["finished"] * 6
            assert table["y"] == list(range(6))
            states = await worker_states(rush)
            assert states[wid] == "lost"
            replacements = [w for w in rush.local_workers if w != wid]
            assert replacements, "a replacement was started"
            assert wid not in rush.local_workers
            assert set(table["worker_id"]) - {wid} <= set(replacements)
            assert table[0]["attempts"] == 2
            assert last_condition(table[0])["type"] == "WorkerLost"
        finally:
            await rush.reset(workers=True)


async def test_restart_kills_a_lost_local_worker_that_still_lives(
    controller: Controller, processes: list[subprocess.Popen[bytes]]
) -> None:
    [wid] = await controller.start_local_workers(
        1, fun=funcs.square, heartbeat_period=0.1, heartbeat_expire=0.5
    )
    await controller.wait_for_workers(1, timeout=30)
    old = controller.local_workers[wid].process
    processes.append(old)
    old.send_signal(signal.SIGSTOP)  # hung: alive, but its heartbeat expires
    assert await detect_until_found(controller, restart_local_workers=True) == [wid]
    # The replacement takes over; the hung process is not left behind untracked.
    assert await wait_exit(old) == -signal.SIGKILL
    [new] = list(controller.local_workers)
    assert new != wid
    keys = await controller.push_tasks([{"x": 2}, {"x": 3}])
    table = await controller.wait_for_tasks(keys, timeout=30)
    assert table["y"] == [4, 9]
    assert set(table["worker_id"]) == {new}


async def test_reset_kills_local_workers_that_are_no_longer_running(
    controller: Controller, processes: list[subprocess.Popen[bytes]]
) -> None:
    [wid] = await controller.start_local_workers(
        1, fun=funcs.square, heartbeat_period=0.1, heartbeat_expire=0.5
    )
    await controller.wait_for_workers(1, timeout=30)
    process = controller.local_workers[wid].process
    processes.append(process)
    process.send_signal(signal.SIGSTOP)
    assert await detect_until_found(controller) == [wid]
    await controller.reset(workers=True)
    assert controller.local_workers == {}
    assert await wait_exit(process) == -signal.SIGKILL


@pytest.mark.parametrize("every", [0, -1, 0.0])
def test_invalid_detect_lost_every_is_a_config_error(
    config: RedisConfig, network_id: str, every: float
) -> None:
    with pytest.raises(rushpy.ConfigError, match="detect_lost_every"):
        Controller(network_id, config=config, detect_lost_every=every)


# -- wait_for_tasks(..., detect_lost_workers=True) ------------------------------------------------


async def test_wait_for_tasks_fails_the_task_of_a_killed_worker_instead_of_hanging(
    controller: Controller,
) -> None:
    [wid] = await controller.start_local_workers(1, fun=funcs.sleepy)
    await controller.wait_for_workers(1, timeout=30)
    [key] = await controller.push_tasks([{"x": 1, "duration": 60}])
    await wait_until_running(controller, key)

    result: list[rushpy.Table] = []
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:

            async def wait() -> None:
                result.append(await controller.wait_for_tasks([key], detect_lost_workers=True))

            tg.start_soon(wait)
            await anyio.sleep(0.2)
            controller.local_workers[wid].process.kill()
    [row] = result[0]
    assert row["state"] == "failed"
    assert row["condition"]["type"] == "WorkerLost"
    assert wid in row["condition"]["message"]
    assert (await worker_states(controller))[wid] == "lost"


async def test_wait_for_tasks_raises_when_no_worker_is_left(controller: Controller) -> None:
    [wid] = await controller.start_local_workers(1, fun=funcs.sleepy)
    await controller.wait_for_workers(1, timeout=30)
    keys = await controller.push_tasks([{"x": 1, "duration": 60}, {"x": 2}], max_retries=1)
    await wait_until_running(controller, keys[0])
    controller.local_workers[wid].process.kill()
    with anyio.fail_after(20), pytest.raises(rushpy.WorkerError, match="no worker") as err:
        await controller.wait_for_tasks(keys, detect_lost_workers=True)
    assert wid in str(err.value)
    table = await rows(controller)
    assert [table[k]["state"] for k in keys] == ["queued", "queued"]


async def test_wait_for_tasks_with_restart_finishes_on_the_replacement(
    config: RedisConfig, network_id: str
) -> None:
    async with Controller(network_id, config=config, restart_lost_workers=True, shutdown_timeout=5) as rush:
        try:
            [wid] = await rush.start_local_workers(1, fun=funcs.sleepy)
            await rush.wait_for_workers(1, timeout=30)
            keys = await rush.push_tasks([{"x": i, "duration": 0.3} for i in range(3)], max_retries=1)
            await wait_until_running(rush, keys[0])
            rush.local_workers[wid].process.kill()
            with anyio.fail_after(40):
                table = await rush.wait_for_tasks(keys, detect_lost_workers=True)
            assert table["state"] == ["finished"] * 3
            [new] = list(rush.local_workers)
            assert new != wid
            assert set(table["worker_id"]) == {new}
            assert table[0]["attempts"] == 2
            assert (await worker_states(rush))[wid] == "lost"
        finally:
            await rush.reset(workers=True)


# -- kills ----------------------------------------------------------------------------------------


async def test_kill_a_local_worker_settles_its_running_tasks(controller: Controller) -> None:
    [wid] = await controller.start_local_workers(1, fun=funcs.async_sleepy, concurrency=2)
    await controller.wait_for_workers(1, timeout=30)
    retried, final = await controller.push_tasks(
        [{"x": 1, "duration": 60}, {"x": 2, "duration": 60}], max_retries=[1, 0]
    )
    await wait_until_running(controller, retried, final)

    result = await controller.stop_workers("kill", [wid])
    assert result.stopped == [wid]
    assert controller.local_workers[wid].process.poll() == -signal.SIGKILL
    assert (await worker_states(controller))[wid] == "killed"
    table = await rows(controller)
    assert table[retried]["state"] == "queued"
    assert last_condition(table[retried])["type"] == "WorkerKilled"
    assert table[final]["state"] == "failed"
    assert table[final]["condition"]["type"] == "WorkerKilled"
    assert wid in table[final]["condition"]["message"]
    # A killed worker is not reported as lost afterwards.
    assert await controller.detect_lost_workers() == []
    assert (await controller.status()).n_killed_workers == 1


async def test_kill_an_in_process_worker_stops_it_at_once(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    # The worker runs in this very process: the kill must reach it through the
    # network (its kill key), not by signalling its process id.
    async with Worker(network_id, config=config) as w:
        [key] = await controller.push_tasks([{"x": 1, "duration": 60}])
        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_function, w, funcs.async_sleepy)
                await wait_until_running(controller, key)
                result = await controller.stop_workers("kill", [w.worker_id])
                assert result.stopped == [w.worker_id]
        assert w.killed
        assert w.terminated
    assert (await worker_states(controller))[w.worker_id] == "killed"
    row = (await rows(controller))[key]
    assert row["state"] == "failed"
    assert row["condition"]["type"] == "WorkerKilled"
    assert w.worker_id in row["condition"]["message"]


async def test_kill_key_stops_a_worker_loop_and_requeues_its_task(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        [key] = await controller.push_tasks([{"x": 1, "duration": 60}], max_retries=1)
        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_function, w, funcs.async_sleepy)
                await wait_until_running(controller, key)
                assert not w.killed
                await controller._store.workers.request_kill([w.worker_id])
        # run_function returned (the task group closed) with the task still sleeping.
        assert w.killed
        # Still inside the worker: the task is settled on exit.
        assert await controller.is_running_task(key)
    assert (await worker_states(controller))[w.worker_id] == "killed"
    row = (await rows(controller))[key]
    assert row["state"] == "queued"
    assert row["attempts"] == 1
    condition = last_condition(row)
    assert condition["type"] == "WorkerKilled"
    assert w.worker_id in condition["message"]
    assert await shared_queue(controller) == [key]


async def cli_worker_running_a_task(
    controller: Controller,
    config: RedisConfig,
    *,
    network_id: str,
    wid: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a CLI worker and give it a 60 s task (one retry); return it once the task runs."""
    args = ["--network", network_id, "--fun", "tests.funcs:sleepy", "--worker-id", wid]
    proc = spawn_cli(config, args, tmp_path, processes)
    await controller.wait_for_workers(worker_ids=[wid], timeout=30)
    [key] = await controller.push_tasks([{"x": 1, "duration": 60}], max_retries=1)
    await wait_until_running(controller, key)
    return proc, key


async def test_kill_key_makes_a_cli_worker_exit_130(
    controller: Controller,
    config: RedisConfig,
    network_id: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    wid = "cli-kill-key"
    proc, key = await cli_worker_running_a_task(
        controller, config, network_id=network_id, wid=wid, tmp_path=tmp_path, processes=processes
    )
    await controller._store.workers.request_kill([wid])
    assert await wait_exit(proc, 10) == 130
    assert (await worker_states(controller))[wid] == "killed"
    row = (await rows(controller))[key]
    assert row["state"] == "queued"
    assert last_condition(row)["type"] == "WorkerKilled"


# -- idle timeout ---------------------------------------------------------------------------------


async def test_local_workers_exit_after_the_idle_timeout(controller: Controller) -> None:
    ids = await controller.start_local_workers(2, fun=funcs.square, idle_timeout=0.5)
    await controller.wait_for_workers(2, timeout=30)
    keys = await controller.push_tasks([{"x": i} for i in range(10)])
    table = await controller.wait_for_tasks(keys, timeout=20)
    assert table["y"] == [i * i for i in range(10)]
    for wid in ids:
        local = controller.local_workers[wid]
        assert await wait_exit(local.process) == 0, local.log_tail()
    assert await worker_states(controller) == dict.fromkeys(ids, "terminated")
    assert (await controller.status()).n_running_workers == 0


async def test_idle_timeout_does_not_stop_a_busy_worker(controller: Controller) -> None:
    [wid] = await controller.start_local_workers(1, fun=funcs.async_sleepy, concurrency=2, idle_timeout=0.3)
    await controller.wait_for_workers(1, timeout=30)
    [long] = await controller.push_tasks([{"x": 1, "duration": 2.0}])
    await wait_until_running(controller, long)
    await anyio.sleep(0.8)  # the second slot has found the queue empty for over 0.3 s
    assert controller.local_workers[wid].process.poll() is None
    # The worker still takes work: the idle slot runs a new task at once.
    [short] = await controller.push_tasks([{"x": 2, "duration": 0.01}])
    table = await controller.wait_for_tasks([long, short], timeout=20)
    assert table["state"] == ["finished", "finished"]
    assert set(table["worker_id"]) == {wid}
    process = controller.local_workers[wid].process
    assert await wait_exit(process) == 0, controller.local_workers[wid].log_tail()
    assert (await worker_states(controller))[wid] == "terminated"


async def test_cli_idle_timeout(
    controller: Controller,
    config: RedisConfig,
    network_id: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    wid = "cli-idle"
    args = ["--network", network_id, "--fun", "tests.funcs:square", "--worker-id", wid]
    proc = spawn_cli(config, [*args, "--idle-timeout", "0.5"], tmp_path, processes)
    await controller.wait_for_workers(worker_ids=[wid], timeout=30)
    [key] = await controller.push_tasks([{"x": 3}])
    assert (await controller.wait_for_tasks([key], timeout=20))[0]["y"] == 9
    assert await wait_exit(proc) == 0
    assert (await worker_states(controller))[wid] == "terminated"


@pytest.mark.parametrize("idle", [0, -1, 0.0])
async def test_invalid_idle_timeout_is_a_config_error(controller: Controller, idle: float) -> None:
    with pytest.raises(rushpy.ConfigError, match="idle_timeout"):
        await controller.start_local_workers(1, fun=funcs.square, idle_timeout=idle)
    assert controller.local_workers == {}


# -- signals ---------------------------------------------------------------------------------------


async def test_second_sigint_exits_130_and_requeues_the_running_task(
    controller: Controller,
    config: RedisConfig,
    network_id: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    wid = "cli-two-sigints"
    proc, key = await cli_worker_running_a_task(
        controller, config, network_id=network_id, wid=wid, tmp_path=tmp_path, processes=processes
    )
    proc.send_signal(signal.SIGINT)
    await anyio.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert await wait_exit(proc, 10) == 130
    assert (await worker_states(controller))[wid] == "killed"
    row = (await rows(controller))[key]
    assert row["state"] == "queued"
    assert row["attempts"] == 1
    assert last_condition(row)["type"] == "WorkerKilled"
    assert await shared_queue(controller) == [key]


@pytest.mark.parametrize("idle", [0, -0.5])
async def test_run_function_rejects_invalid_idle_timeout(
    controller: Controller, config: RedisConfig, network_id: str, idle: float
) -> None:
    async with Worker(network_id, config=config) as w:
        with pytest.raises(rushpy.ConfigError, match="idle_timeout"):
            await run_function(w, funcs.square, idle_timeout=idle)
