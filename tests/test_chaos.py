"""Chaos tests: real faults while a network runs, then nothing lost, nothing twice.

Each test runs 2,000 tasks (``max_retries=3``) on 4 local worker processes and
injects one kind of fault while they run:

* a random worker is SIGKILLed every 0.5 s and replaced;
* the Redis server (append-only file on) is restarted twice;
* every client connection is killed (``CLIENT KILL``) every 0.2 s.

Afterwards every task is finished exactly once with the right result, and no
snapshot taken during the run ever showed a key in two states. Counts of the
faults and re-runs are logged (``-o log_cli=true`` shows them).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread

from rushpy import Controller, EmbeddedServer, RedisConfig
from rushpy.connection import create_client

N_TASKS = 2000
N_WORKERS = 4
log = logging.getLogger("tests.chaos")


def check_no_key_in_two_states(snapshot: dict[str, list[str]]) -> int:
    """Assert the snapshot partitions keys; return how many keys it holds."""
    seen: dict[str, str] = {}
    for state, keys in snapshot.items():
        assert len(keys) == len(set(keys)), f"a key appears twice in {state}"
        for key in keys:
            assert key not in seen, f"{key} is both {seen[key]} and {state}"
            seen[key] = state
    return len(seen)


async def run_with_faults(
    rush: Controller, inject: Callable[[], Awaitable[Any]], every: float
) -> tuple[list[str], int, int]:
    """Push the tasks, inject faults every ``every`` s until all are done.

    Returns the keys, the number of faults injected and the number of
    mid-run snapshots checked.
    """
    keys = await rush.push_tasks([{"x": i} for i in range(N_TASKS)], max_retries=3)
    faults = 0
    snapshots = 0
    done = anyio.Event()

    async def chaos() -> None:
        nonlocal faults, snapshots
        while not done.is_set():
            await anyio.sleep(every)
            if done.is_set():
                return
            await inject()
            faults += 1
            assert check_no_key_in_two_states(await rush.tasks_with_state()) == N_TASKS
            snapshots += 1

    with anyio.fail_after(180):
        async with anyio.create_task_group() as tg:
            tg.start_soon(chaos)
            await rush.wait_for_tasks(keys, detect_lost_workers=True)
            done.set()
    return keys, faults, snapshots


async def assert_each_task_finished_once(rush: Controller, keys: list[str]) -> int:
    """Every key finished exactly once with its result; returns the number of re-runs."""
    snapshot = await rush.tasks_with_state()
    assert check_no_key_in_two_states(snapshot) == N_TASKS
    assert snapshot["queued"] == []
    assert snapshot["running"] == []
    assert snapshot["failed"] == []
    finished = snapshot["finished"]
    assert len(finished) == len(set(finished)) == N_TASKS
    assert set(finished) == set(keys)
    rush.reset_cache()
    table = await rush.fetch_finished_tasks()
    assert len(table) == N_TASKS
    for row in table:
        assert row["y"] == row["x"] ** 2
    return sum(row["attempts"] for row in table) - N_TASKS


async def test_workers_sigkilled_every_half_second(config: RedisConfig, network_id: str) -> None:
    rng = random.Random(7)
    async with Controller(network_id, config=config, restart_lost_workers=True, shutdown_timeout=5) as rush:
        await rush.start_local_workers(N_WORKERS, fun="tests.funcs:chaos_square")
        await rush.wait_for_workers(N_WORKERS, timeout=60)

        async def kill_one() -> None:
            alive = [w for w in rush.local_workers.values() if w.process.poll() is None]
            if alive:
                rng.choice(alive).process.kill()

        try:
            keys, kills, snapshots = await run_with_faults(rush, kill_one, 0.5)
            reruns = await assert_each_task_finished_once(rush, keys)
            info = await rush.worker_info()
            lost = [w for w, s in zip(info["worker_id"], info["state"], strict=True) if s == "lost"]
            assert kills >= 1
            assert len(lost) >= 1  # the kills were noticed and the workers replaced
            log.warning(
                "SIGKILL chaos: %d tasks, %d kills, %d workers lost and replaced, %d re-runs, %d snapshots",
                N_TASKS,
                kills,
                len(lost),
                reruns,
                snapshots,
            )
        finally:
            await rush.reset(workers=True)


async def test_redis_restarted_mid_run(network_id: str) -> None:
    async with (
        EmbeddedServer(appendonly=True) as server,
        Controller(network_id, config=server.config, shutdown_timeout=5) as rush,
    ):
        await rush.start_local_workers(N_WORKERS, fun="tests.funcs:chaos_square")
        await rush.wait_for_workers(N_WORKERS, timeout=60)
        restarts = 0

        async def restart_when_busy() -> None:
            nonlocal restarts
            # Two restarts, each once more results have come in.
            if restarts < 2 and await rush.n_finished_tasks() > (restarts + 1) * N_TASKS // 4:
                await anyio.to_thread.run_sync(server.restart)
                restarts += 1

        keys, _, snapshots = await run_with_faults(rush, restart_when_busy, 0.2)
        assert restarts >= 1
        reruns = await assert_each_task_finished_once(rush, keys)
        assert set((await rush.worker_info())["state"]) == {"running"}  # every worker survived
        log.warning(
            "Redis restart chaos: %d tasks, %d restarts, %d re-runs, %d snapshots",
            N_TASKS,
            restarts,
            reruns,
            snapshots,
        )


async def test_client_connections_killed_mid_run(config: RedisConfig, network_id: str) -> None:
    killer = create_client(config, retries=0)
    killed = 0
    async with Controller(network_id, config=config, shutdown_timeout=5) as rush:
        await rush.start_local_workers(N_WORKERS, fun="tests.funcs:chaos_square")
        await rush.wait_for_workers(N_WORKERS, timeout=60)

        async def kill_connections() -> None:
            nonlocal killed
            # Every connection but the killer's own: workers, their subscriptions,
            # and this controller too.
            for kind in ("normal", "pubsub"):
                killed += int(await killer.execute_command("CLIENT", "KILL", "TYPE", kind, "SKIPME", "yes"))

        try:
            keys, rounds, snapshots = await run_with_faults(rush, kill_connections, 0.2)
            reruns = await assert_each_task_finished_once(rush, keys)
            assert rounds >= 1 and killed >= N_WORKERS
            assert set((await rush.worker_info())["state"]) == {"running"}  # every worker survived
            log.warning(
                "CLIENT KILL chaos: %d tasks, %d rounds, %d connections killed, %d re-runs, %d snapshots",
                N_TASKS,
                rounds,
                killed,
                reruns,
                snapshots,
            )
        finally:
            await rush.reset(workers=True)
            await killer.aclose()
