"""LocalWorkerPool and the controller's local workers: real processes on the suite's server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

import rushpy
from rushpy import Controller, RedisConfig
from rushpy.pool import LocalWorker, LocalWorkerPool
from rushpy.spec import WorkerSpec
from tests import funcs
from tests.helpers import eventually

pytestmark = pytest.mark.usefixtures("anyio_backend")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
async def pool(config: RedisConfig) -> AsyncIterator[LocalWorkerPool]:
    pool = LocalWorkerPool(config.to_url(include_password=True), terminate_timeout=5)
    try:
        yield pool
    finally:
        pool.kill_now()
        await anyio.to_thread.run_sync(pool.close_sync)


def spec_of(network_id: str, fun: str = "tests.funcs:square", **fields: Any) -> WorkerSpec:
    return WorkerSpec(network_id=network_id, fun=fun, **fields)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its new parent) is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def exit_code(local: LocalWorker, timeout: float = 15) -> int:
    await eventually(lambda: local.process.poll() is not None, f"{local.worker_id} exits", timeout=timeout)
    code = local.process.poll()
    assert code is not None
    return code


async def busy(controller: Controller, worker_ids: list[str], seconds: float = 60) -> list[str]:
    """Give each worker a long plain task (SIGTERM alone does not end it); return once all run."""
    keys = await controller.push_priority_tasks([{"x": 1, "duration": seconds}] * len(worker_ids), worker_ids)
    await eventually(lambda: _all_running(controller, keys), "the long tasks run", timeout=30)
    return keys


async def _all_running(controller: Controller, keys: list[str]) -> bool:
    return all(await controller.is_running_task(keys))


# -- the pool ------------------------------------------------------------------------------------
async def test_spawned_workers_register_and_carry_their_own_command_line(
    pool: LocalWorkerPool, controller: Controller, network_id: str, config: RedisConfig
) -> None:
    ids = pool.spawn(spec_of(network_id, concurrency=2, idle_timeout=30.0), 2)
    assert len(set(ids)) == 2 and len(pool) == 2
    assert pool.starting() and pool.starting([ids[0]])
    await controller.wait_for_workers(worker_ids=ids, timeout=30)
    assert not pool.starting(ids)
    assert sorted(pool.alive()) == sorted(ids) and pool.exit_codes() == {}
    for wid, local in pool.workers.items():
        assert local.spec.worker_id == wid
        assert (local.idle_timeout, local.log_level, local.spec.concurrency) == (30.0, "warning", 2)
        argv = Path(f"/proc/{local.process.pid}/cmdline").read_bytes().decode().split("\0")
        assert argv[argv.index("--worker-id") + 1] == wid
        # The URL travels in the environment, never on the command line.
        assert "--url" not in argv and config.to_url() not in " ".join(argv)
    keys = await controller.push_tasks([{"x": i} for i in range(6)])
    table = await controller.wait_for_tasks(keys, timeout=30)
    assert table["y"] == [i * i for i in range(6)]


async def test_close_terminates_idle_workers(
    pool: LocalWorkerPool, controller: Controller, network_id: str
) -> None:
    [wid] = pool.spawn(spec_of(network_id))
    await controller.wait_for_workers(worker_ids=[wid], timeout=30)
    assert await pool.close() == []
    assert pool.exit_codes() == {wid: 0}
    assert (await controller.worker_info())[0]["state"] == "terminated"


async def test_close_kills_a_worker_that_does_not_exit_in_time(
    pool: LocalWorkerPool, controller: Controller, network_id: str
) -> None:
    [wid] = pool.spawn(spec_of(network_id, "tests.funcs:sleepy"))
    await controller.wait_for_workers(worker_ids=[wid], timeout=30)
    await busy(controller, [wid])
    assert await pool.close(0.3) == [wid]
    assert pool.exit_codes() == {wid: -signal.SIGKILL}


async def test_interrupted_close_kills_every_process_at_once(
    pool: LocalWorkerPool, controller: Controller, network_id: str
) -> None:
    ids = pool.spawn(spec_of(network_id, "tests.funcs:sleepy"), 2)
    await controller.wait_for_workers(worker_ids=ids, timeout=30)
    await busy(controller, ids)
    # A native cancel (what asyncio.run does after a second Ctrl-C) pierces the shield.
    closing = asyncio.create_task(pool.close(60))
    await anyio.sleep(0.3)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    for local in pool.workers.values():
        assert await exit_code(local, timeout=5) == -signal.SIGKILL


async def test_close_sync_terminates_then_kills(
    config: RedisConfig, controller: Controller, network_id: str
) -> None:
    pool = LocalWorkerPool(config.to_url(include_password=True), terminate_timeout=0.3)
    idle, stuck = pool.spawn(spec_of(network_id, "tests.funcs:sleepy"), 2)
    await controller.wait_for_workers(worker_ids=[idle, stuck], timeout=30)
    await busy(controller, [stuck])
    await anyio.to_thread.run_sync(pool.close_sync)
    assert pool.exit_codes() == {idle: 0, stuck: -signal.SIGKILL}


async def test_restart_kills_the_old_process_and_starts_the_same_spec_under_a_new_id(
    pool: LocalWorkerPool, controller: Controller, network_id: str
) -> None:
    [old] = pool.spawn(spec_of(network_id, concurrency=2, idle_timeout=30.0))
    await controller.wait_for_workers(worker_ids=[old], timeout=30)
    before = pool.workers[old]
    [new] = await pool.restart([old, "not-in-the-pool"])
    assert new != old and list(pool.workers) == [new]
    assert before.process.poll() == -signal.SIGKILL
    after = pool.workers[new]
    assert after.spec.worker_id == new
    assert after.spec.model_dump(exclude={"worker_id"}) == before.spec.model_dump(exclude={"worker_id"})
    await controller.wait_for_workers(worker_ids=[new], timeout=30)
    assert await pool.restart(["not-in-the-pool"]) == []


async def test_kill_reports_whether_it_killed_a_running_process(
    pool: LocalWorkerPool, controller: Controller, network_id: str
) -> None:
    [wid] = pool.spawn(spec_of(network_id))
    assert await pool.kill(wid)
    assert pool.exit_codes() == {wid: -signal.SIGKILL}
    assert not await pool.kill(wid)
    assert not await pool.kill("unknown")
    assert not pool.is_alive(wid) and not pool.is_alive("unknown")


async def test_check_started_names_a_process_that_exited_before_registering(
    pool: LocalWorkerPool, network_id: str
) -> None:
    [wid] = pool.spawn(spec_of(network_id, "tests.funcs:no_such_function"))
    assert await exit_code(pool.workers[wid]) == 2
    with pytest.raises(rushpy.WorkerError, match=f"(?s){wid} exited with code 2.*no_such_function"):
        pool.check_started(set())
    pool.check_started({wid})  # it registered (then exited): no complaint


async def test_kill_all_forgets_every_process(pool: LocalWorkerPool, network_id: str) -> None:
    ids = pool.spawn(spec_of(network_id), 2)
    processes = [pool.workers[w].process for w in ids]
    await pool.kill_all()
    assert len(pool) == 0
    assert [p.poll() for p in processes] == [-signal.SIGKILL] * 2


def test_spawn_needs_a_function(pool: LocalWorkerPool, network_id: str) -> None:
    with pytest.raises(rushpy.ConfigError, match="fun="):
        pool.spawn(WorkerSpec(network_id=network_id))


def test_spawn_failure_is_a_worker_error(
    pool: LocalWorkerPool, network_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    with pytest.raises(rushpy.WorkerError, match="/nonexistent/python"):
        pool.spawn(spec_of(network_id))
    assert len(pool) == 0


@pytest.mark.parametrize("name", ["terminate_timeout", "kill_timeout"])
@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), True])
def test_invalid_timeouts_are_config_errors(name: str, value: float) -> None:
    with pytest.raises(rushpy.ConfigError, match="timeout="):
        LocalWorkerPool("redis://127.0.0.1:1/0", **{name: value})


def test_controller_validates_shutdown_timeout(network_id: str) -> None:
    with pytest.raises(rushpy.ConfigError, match="shutdown_timeout=-1"):
        Controller(network_id, "redis://127.0.0.1:1/0", shutdown_timeout=-1)


def test_log_tail_reads_the_end_of_the_log(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    log.write_text("x" * 100_000 + "the end")
    local = LocalWorker("w", subprocess.Popen([sys.executable, "-c", ""]), log, WorkerSpec(network_id="n"))
    local.process.wait()
    assert local.log_tail(7) == "the end"
    assert len(local.log_tail()) == 2000
    log.unlink()
    assert local.log_tail() == ""


# -- the controller's local workers ---------------------------------------------------------------
async def test_stored_start_arguments_carry_every_option(controller: Controller, network_id: str) -> None:
    await controller.start_local_workers(
        1, fun=funcs.square, concurrency=2, heartbeat_period=5, idle_timeout=30, log_level="info"
    )
    stored = await controller._store.workers.get_start_args()
    assert stored is not None
    spec = WorkerSpec.from_start_args(stored, network_id)
    assert (spec.fun, spec.concurrency, spec.idle_timeout, spec.log_level) == (
        "tests.funcs:square",
        2,
        30.0,
        "info",
    )
    assert (spec.heartbeat_period, spec.heartbeat_expire) == (5.0, 15.0)


async def test_start_without_fun_uses_the_stored_options_and_overrides_given_ones(
    controller: Controller,
) -> None:
    await controller.start_local_workers(1, fun=funcs.square, concurrency=2, idle_timeout=30)
    [same] = await controller.start_local_workers(1)
    assert controller.local_workers[same].spec.model_dump(exclude={"worker_id"}) == {
        "network_id": controller.network_id,
        "prefix": "rush",
        "fun": "tests.funcs:square",
        "worker_loop": None,
        "loop_args": {},
        "concurrency": 2,
        "heartbeat_period": None,
        "heartbeat_expire": None,
        "idle_timeout": 30.0,
        "log_level": "warning",
        "wait_for_start_args": 0.0,
        "allow_pickle": False,  # an operator's choice, never taken from the stored arguments
        "workers_per_process": 1,
    }
    [changed] = await controller.start_local_workers(1, idle_timeout=60, log_level="debug")
    spec = controller.local_workers[changed].spec
    assert (spec.concurrency, spec.idle_timeout, spec.log_level) == (2, 60.0, "debug")
    # The stored start arguments did not change.
    stored = await controller._store.workers.get_start_args()
    assert stored is not None and (stored["idle_timeout"], stored["log_level"]) == (30.0, "warning")
    await controller.wait_for_workers(3, timeout=30)


async def test_start_without_fun_and_without_start_arguments(controller: Controller) -> None:
    with pytest.raises(rushpy.NoStartArgumentsError, match="fun="):
        await controller.start_local_workers(1)
    with pytest.raises(rushpy.ConfigError, match="n_workers"):
        await controller.start_local_workers(0, fun=funcs.square)
    assert controller.local_workers == {}


async def test_wait_for_workers_counts_n_among_the_given_ids(
    controller: Controller, network_id: str, config: RedisConfig
) -> None:
    with pytest.raises(rushpy.ConfigError, match=r"n=3.*only 2"):
        await controller.wait_for_workers(n=3, worker_ids=["a", "b"], timeout=0)
    with pytest.raises(rushpy.ConfigError, match="only 1"):
        await controller.wait_for_workers(n=2, worker_ids=["a", "a"], timeout=0)
    with pytest.raises(rushpy.ConfigError, match="list of ids"):
        await controller.wait_for_workers(worker_ids="abc", timeout=0)
    async with rushpy.Worker(network_id, config=config, worker_id="alive"):
        assert await controller.wait_for_workers(n=1, worker_ids=["alive", "unknown"], timeout=5) == ["alive"]
        assert await controller.wait_for_workers(n=0, worker_ids=["unknown"], timeout=0) == ["alive"]
        with pytest.raises(rushpy.WorkerTimeoutError, match=r"missing ids \['unknown'\]"):
            await controller.wait_for_workers(worker_ids=["alive", "unknown"], timeout=0.1)


async def test_wait_for_workers_fails_when_a_local_worker_dies_before_registering(
    controller: Controller,
) -> None:
    [wid] = await controller.start_local_workers(1, fun="tests.funcs:no_such_function")
    with pytest.raises(rushpy.WorkerError, match=f"{wid} exited with code 2"):
        await controller.wait_for_workers(timeout=30)


async def test_closing_records_the_workers_it_had_to_kill(config: RedisConfig, network_id: str) -> None:
    async with Controller(network_id, config=config, shutdown_timeout=0.3) as rush:
        [wid] = await rush.start_local_workers(1, fun=funcs.sleepy)
        await rush.wait_for_workers(1, timeout=30)
        [key] = await busy(rush, [wid])
        local = rush.local_workers[wid]
    assert local.process.poll() == -signal.SIGKILL
    async with Controller(network_id, config=config) as rush:
        try:
            assert (await rush.worker_info())[0]["state"] == "killed"
            [row] = await rush.fetch_tasks()
            assert row["key"] == key
            assert row["state"] == "failed" and row["condition"]["type"] == "WorkerKilled"
        finally:
            await rush.reset()


async def test_reset_kills_and_forgets_local_workers(controller: Controller) -> None:
    ids = await controller.start_local_workers(2, fun=funcs.square)
    processes = [controller.local_workers[w].process for w in ids]
    await controller.reset()
    assert controller.local_workers == {}
    assert [p.poll() for p in processes] == [-signal.SIGKILL] * 2


# -- no worker outlives its controller (issue 7, bug 5) -------------------------------------------
SCRIPT = """
import asyncio, sys
from rushpy import Controller

async def main(network_id, url, mode):
    async with Controller(network_id, url, shutdown_timeout=2) as rush:
        ids = await rush.start_local_workers(2, fun="tests.funcs:sleepy")
        await rush.wait_for_workers(2, timeout=60)
        keys = await rush.push_priority_tasks([{"x": 1, "duration": 60}] * 2, ids)
        while not all(await rush.is_running_task(keys)):
            await asyncio.sleep(0.05)
        print(" ".join(str(w.process.pid) for w in rush.local_workers.values()), flush=True)
        if mode == "exception":
            raise RuntimeError("boom")
        if mode == "signal":
            await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.parametrize("how", ["normal", "exception", "double-sigint", "sigterm", "sigkill"])
async def test_a_controller_leaves_no_worker_behind(
    config: RedisConfig, network_id: str, tmp_path: Path, how: str
) -> None:
    script = tmp_path / "controller.py"
    script.write_text(textwrap.dedent(SCRIPT))
    mode = how if how in ("normal", "exception") else "signal"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(tmp_path / "stderr.txt", "wb") as err:
        proc = await anyio.open_process(
            [sys.executable, str(script), network_id, config.to_url(include_password=True), mode],
            cwd=REPO,
            env=env,
            stderr=err,
        )
    pids: list[int] = []
    try:
        assert proc.stdout is not None
        with anyio.fail_after(60):
            line = b""
            while not line.endswith(b"\n"):
                line += await proc.stdout.receive()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        if how == "double-sigint":
            proc.send_signal(signal.SIGINT)
            await anyio.sleep(0.2)
            proc.send_signal(signal.SIGINT)
        elif how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        elif how == "sigkill":
            proc.kill()
        with anyio.fail_after(30):
            await proc.wait()
        await eventually(lambda: not any(pid_alive(p) for p in pids), "the workers are gone", timeout=8)
    finally:
        if proc.returncode is None:
            proc.kill()
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        async with Controller(network_id, config=config) as rush:
            await rush.reset()


ORPHAN = """
import asyncio, sys
from rushpy.pool import LocalWorkerPool
from rushpy.spec import WorkerSpec

async def main(network_id, url):
    pool = LocalWorkerPool(url, terminate_timeout=0.5)
    [wid] = pool.spawn(WorkerSpec(network_id=network_id, fun="tests.funcs:square"))
    print(pool.workers[wid].process.pid, flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_pool_never_closed_is_closed_at_interpreter_exit(
    config: RedisConfig, network_id: str
) -> None:
    # The child does not learn its parent's pid (no death signal): only the exit hook stops it.
    code = f"import rushpy.pool\nrushpy.pool.ENV_PARENT_PID = 'UNUSED'\n{ORPHAN}"
    done = await anyio.run_process(
        [sys.executable, "-c", code, network_id, config.to_url(include_password=True)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    pid = int(done.stdout.split()[0])
    try:
        assert not pid_alive(pid)
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


async def test_local_workers_get_the_controllers_reconnect_budget(
    config: RedisConfig, network_id: str
) -> None:
    """The budget travels in the URL that local workers read from their environment."""
    patient = config.model_copy(update={"reconnect_budget": 3.5})
    async with Controller(network_id, config=patient, shutdown_timeout=5) as rush:
        [wid] = await rush.start_local_workers(1, fun=funcs.square)
        await rush.wait_for_workers(1, timeout=30)
        pid = rush.local_workers[wid].process.pid
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        [url] = [v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"RUSHPY_REDIS_URL=")]
        assert RedisConfig.from_url(url).reconnect_budget == 3.5
        await rush.reset()
