"""Worker loops (decentralized mode): in-process, on local workers and from the command line."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio

import rushpy
from rushpy import Controller, RedisConfig, Worker, run_worker_loop
from rushpy.codec import decode
from rushpy.keys import Keys
from rushpy.signing import SigningKey
from rushpy.spec import WorkerSpec
from tests import loop_funcs
from tests.helpers import eventually, spawn_cli, wait_exit

pytestmark = pytest.mark.usefixtures("anyio_backend")

LOOPS = "tests.loop_funcs"


async def states(controller: Controller) -> dict[str, str]:
    return {r["worker_id"]: str(r["state"]) for r in await controller.worker_info()}


async def last_error(raw: redis.asyncio.Redis, network_id: str, worker_id: str) -> dict[str, Any]:
    value = await raw.hget(Keys(network_id).worker(worker_id), "last_error")
    assert value is not None, "no last_error recorded"
    return dict(decode(value))


async def n_finished(controller: Controller) -> int:
    return (await controller.status()).n_finished_tasks


# -- in-process ----------------------------------------------------------------------------------
@pytest.mark.parametrize("loop", [loop_funcs.square_loop, f"{LOOPS}:square_loop"], ids=["callable", "path"])
async def test_loop_in_process_runs_and_a_returning_loop_terminates_the_worker(
    controller: Controller, config: RedisConfig, network_id: str, loop: Any
) -> None:
    async with Worker(network_id, config=config) as w:
        await run_worker_loop(w, loop, n=4, offset=1)
        assert w.terminated and not w.killed
    table = await controller.fetch_finished_tasks()
    assert sorted((r["x"], r["y"]) for r in table) == [(x, x * x) for x in range(1, 5)]
    assert set(table["worker_id"]) == {w.worker_id}
    assert (await states(controller))[w.worker_id] == "terminated"


async def test_loop_args_reach_the_loop(controller: Controller, config: RedisConfig, network_id: str) -> None:
    args = {"n": 3, "name": "a", "space": {"x": [-5.0, 10.0]}, "flags": [True, None]}
    async with Worker(network_id, config=config) as w:
        await run_worker_loop(w, loop_funcs.echo_loop, **args)
    [row] = await controller.fetch_finished_tasks()
    assert row["args"] == args


async def test_terminate_request_ends_the_loop(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_worker_loop, w, loop_funcs.until_terminated)
                await eventually(lambda: n_finished(controller), "the loop finished a task", 10)
                await controller.stop_workers("terminate", [w.worker_id])
    assert (await states(controller))[w.worker_id] == "terminated"
    assert (await controller.status()).n_running_tasks == 0


async def test_kill_cancels_a_loop_that_ignores_termination(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    async with Worker(network_id, config=config) as w:
        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_worker_loop, w, loop_funcs.sleep_forever)
                await eventually(controller.n_running_tasks, "the loop holds a running task", 10)
                await controller._store.workers.request_kill([w.worker_id])
        assert w.killed
    assert (await states(controller))[w.worker_id] == "killed"
    [row] = await controller.fetch_failed_tasks()
    assert row["condition"]["type"] == "WorkerKilled"


async def test_loop_exception_fails_running_tasks_records_last_error_and_crashes_the_worker(
    controller: Controller, config: RedisConfig, network_id: str, raw: redis.asyncio.Redis, tmp_path: Path
) -> None:
    marker = str(tmp_path / "marker")
    with pytest.raises(ValueError, match="the loop broke"):
        async with Worker(network_id, config=config) as w:
            await run_worker_loop(w, loop_funcs.failing_loop, marker=marker)
    [row] = await controller.fetch_failed_tasks()
    assert row["condition"]["type"] == "ValueError"
    assert "the loop broke" in row["condition"]["message"]
    assert "failing_loop" in row["condition"]["traceback"]
    # The worker's exit records the crashing exception itself: type, message and traceback.
    error = await last_error(raw, network_id, w.worker_id)
    assert error["type"] == "ValueError"
    assert error["message"].startswith("the loop broke")
    assert "failing_loop" in error["traceback"]
    # A crash, not a clean stop: detection finds it.
    assert (await states(controller))[w.worker_id] == "running"
    assert await controller.detect_lost_workers() == [w.worker_id]
    assert (await states(controller))[w.worker_id] == "lost"


async def test_run_worker_loop_records_the_loop_s_condition_as_last_error(
    config: RedisConfig, network_id: str, raw: redis.asyncio.Redis, tmp_path: Path
) -> None:
    marker = str(tmp_path / "marker")
    async with Worker(network_id, config=config) as w:
        with pytest.raises(ValueError, match="the loop broke"):
            await run_worker_loop(w, loop_funcs.failing_loop, marker=marker)
        # Looked at before the worker's exit, which records a crash of its own.
        error = await last_error(raw, network_id, w.worker_id)
        assert (error["type"], error["message"]) == ("ValueError", f"the loop broke ({marker})")
        assert "failing_loop" in error["traceback"]
        assert error["at"] is not None


async def test_a_loop_error_without_running_tasks_is_recorded_and_fails_nothing(
    controller: Controller, config: RedisConfig, network_id: str, raw: redis.asyncio.Redis
) -> None:
    async with Worker(network_id, config=config) as w:
        with pytest.raises(LookupError, match="nothing to do"):
            await run_worker_loop(w, loop_funcs.raise_at_once)
        assert (await last_error(raw, network_id, w.worker_id))["type"] == "LookupError"
    assert (await controller.status()).n_failed_tasks == 0


async def test_a_loop_error_the_worker_cannot_record_still_crashes_it(
    config: RedisConfig, network_id: str, controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Recording the failure fails (Redis unreachable, say): logged, and the loop's error goes on.
    async def unreachable(*args: Any) -> Any:
        raise rushpy.ConnectionFailedError("server unreachable (test)")

    async def raise_after_proposing(worker: Worker) -> None:
        await worker.push_running_tasks([{"x": 1}])
        monkeypatch.setattr(worker._store.tasks, "worker_running_keys", unreachable)
        raise KeyError("broken")

    with pytest.raises(KeyError, match="broken"):
        async with Worker(network_id, config=config) as w:
            await run_worker_loop(w, raise_after_proposing)
    # The exit settled the task as a crash instead.
    [row] = await controller.fetch_failed_tasks()
    assert row["condition"]["type"] == "WorkerExited"
    assert "crashed (KeyError" in row["condition"]["message"]


async def test_hybrid_loop_pops_queued_tasks_and_proposes_its_own(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    await controller.push_tasks([{"x": i} for i in range(5)])
    async with Worker(network_id, config=config) as w:
        await run_worker_loop(w, loop_funcs.hybrid_loop, n_own=3)
    table = await controller.fetch_finished_tasks()
    assert sorted(r["x"] for r in table if r["source"] == "queue") == list(range(5))
    assert sorted(r["x"] for r in table if r["source"] == "own") == [100, 101, 102]
    assert all(r["y"] == r["x"] ** 2 for r in table)


async def test_a_plain_function_is_refused_as_a_loop(config: RedisConfig, network_id: str) -> None:
    async with Worker(network_id, config=config) as w:
        with pytest.raises(rushpy.WorkerFunctionError, match="not an async function"):
            await run_worker_loop(w, loop_funcs.not_async)
        w.set_terminated()


# -- local workers -------------------------------------------------------------------------------
async def test_local_workers_run_loops_that_read_everyone_s_results(controller: Controller) -> None:
    ids = await controller.start_local_workers(2, worker_loop=loop_funcs.reader_loop, target=12)
    assert all(w.spec.loop_args == {"target": 12} for w in controller.local_workers.values())
    await eventually(
        lambda: _all_in(controller, ids, "terminated"), "both workers terminated (loops returned)", 30
    )
    table = await controller.fetch_finished_tasks()
    assert len(table) >= 12
    assert set(table["worker_id"]) <= set(ids)
    # Proposals saw the results of both workers so far (the cached reads of the network): the
    # last ones were made once at least 10 tasks were finished (both workers may read the
    # same count just before their last proposals, so 11 is not guaranteed).
    assert max(table["seen"]) >= 10


async def _all_in(controller: Controller, ids: list[str], state: str) -> bool:
    current = await states(controller)
    return all(current.get(w) == state for w in ids)


async def test_crashed_loop_worker_is_detected_and_replaced(
    controller: Controller, raw: redis.asyncio.Redis, network_id: str, tmp_path: Path
) -> None:
    marker = str(tmp_path / "marker")
    [wid] = await controller.start_local_workers(1, worker_loop=f"{LOOPS}:failing_loop", marker=marker)
    process = controller.local_workers[wid].process
    assert await wait_exit(process) == 1
    [failed] = await controller.fetch_failed_tasks()
    assert failed["condition"]["type"] == "ValueError"
    assert "the loop broke" in (await last_error(raw, network_id, wid))["message"]
    assert await controller.detect_lost_workers(restart_local_workers=True) == [wid]
    [new] = [w for w in controller.local_workers if w != wid]
    assert controller.local_workers[new].spec.worker_loop == f"{LOOPS}:failing_loop"
    assert await wait_exit(controller.local_workers[new].process) == 0
    current = await states(controller)
    assert (current[wid], current[new]) == ("lost", "terminated")
    [finished] = await controller.fetch_finished_tasks()
    assert finished["worker_id"] == new


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fun": "tests.funcs:square", "worker_loop": f"{LOOPS}:square_loop"}, "both fun= and worker_loop="),
        ({"fun": "tests.funcs:square", "n": 3}, r"unexpected keyword arguments \['n'\].*worker_loop="),
        ({"n": 3}, r"unexpected keyword arguments \['n'\]"),
        ({"worker_loop": f"{LOOPS}:square_loop", "n": object()}, r"loop argument n=<object.*plain"),
        ({"worker_loop": f"{LOOPS}:square_loop", "worker": 1}, "loop argument name 'worker'"),
        ({"worker_loop": f"{LOOPS}:square_loop", "concurrency": 2}, "concurrency=2 with worker_loop"),
        ({"worker_loop": f"{LOOPS}:square_loop", "idle_timeout": 1.0}, "idle_timeout=1.0 with worker_loop"),
    ],
)
async def test_start_local_workers_rejects_bad_loop_settings(
    controller: Controller, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(rushpy.ConfigError, match=match):
        await controller.start_local_workers(1, **kwargs)
    assert controller.local_workers == {}


async def test_a_stored_loop_starts_more_local_workers(controller: Controller) -> None:
    await controller.start_local_workers(1, worker_loop=loop_funcs.square_loop, n=2)
    [more] = await controller.start_local_workers(1)  # from the stored (signed) start arguments
    spec = controller.local_workers[more].spec
    assert (spec.worker_loop, spec.loop_args, spec.fun) == (f"{LOOPS}:square_loop", {"n": 2}, None)
    for local in controller.local_workers.values():
        assert await wait_exit(local.process) == 0
    assert await n_finished(controller) == 4


def test_worker_script_names_the_loop_and_its_arguments(controller: Controller) -> None:
    script = controller.worker_script(worker_loop=loop_funcs.square_loop, n=5, offset=-1)
    argv = shlex.split(script)
    assert argv[argv.index("--worker-loop") + 1] == f"{LOOPS}:square_loop"
    url = argv.index("--url")
    spec = WorkerSpec.from_argv(argv[3:url] + argv[url + 2 :])
    assert spec.loop_args == {"n": 5, "offset": -1}
    with pytest.raises(rushpy.ConfigError, match="need worker_loop="):
        controller.worker_script(n=5)


# -- command line --------------------------------------------------------------------------------
async def test_cli_runs_a_loop_with_loop_args_and_exits_0_when_it_returns(
    controller: Controller,
    config: RedisConfig,
    network_id: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    args = ["--network", network_id, "--worker-loop", f"{LOOPS}:square_loop", "--loop-arg", "n=3"]
    proc = spawn_cli(config, [*args, "--worker-id", "cli-loop"], tmp_path, processes)
    assert await wait_exit(proc) == 0
    assert sorted((await controller.fetch_finished_tasks())["y"]) == [0, 1, 4]
    assert (await states(controller))["cli-loop"] == "terminated"


async def test_cli_loop_that_raises_exits_1_as_a_crash(
    controller: Controller,
    config: RedisConfig,
    network_id: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    marker = str(tmp_path / "marker")
    args = ["--network", network_id, "--worker-loop", f"{LOOPS}:failing_loop", "--worker-id", "cli-bad"]
    proc = spawn_cli(config, [*args, "--loop-arg", f'marker="{marker}"'], tmp_path, processes)
    assert await wait_exit(proc) == 1
    output = (tmp_path / "worker-0.log").read_text()
    assert "the loop broke" in output
    assert await controller.detect_lost_workers() == ["cli-bad"]


async def test_cli_refuses_a_plain_function_as_loop_before_registering(
    controller: Controller,
    config: RedisConfig,
    network_id: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    args = ["--network", network_id, "--worker-loop", f"{LOOPS}:not_async"]
    proc = spawn_cli(config, args, tmp_path, processes)
    assert await wait_exit(proc) == 2
    assert "not an async function" in (tmp_path / "worker-0.log").read_text()
    assert len(await controller.worker_info()) == 0


KEY = "k" * 32


async def store_loop_args(controller: Controller, network_id: str, *, signed: bool) -> None:
    spec = WorkerSpec(network_id=network_id, worker_loop=f"{LOOPS}:square_loop", loop_args={"n": 2})
    args = spec.signed_start_args(SigningKey(KEY.encode())) if signed else spec.to_start_args()
    await controller._store.workers.set_start_args(args)


@pytest.mark.parametrize(
    ("signed", "extra_args", "env"),
    [(True, [], {"RUSHPY_SIGNING_KEY": KEY}), (False, ["--allow-module", "tests"], {})],
    ids=["signed", "allowed-module"],
)
async def test_cli_runs_a_stored_loop_that_is_signed_or_allowed(
    *,
    controller: Controller,
    config: RedisConfig,
    network_id: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    signed: bool,
    extra_args: list[str],
    env: dict[str, str],
) -> None:
    await store_loop_args(controller, network_id, signed=signed)
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # spawn_cli copies this process's environment
    proc = spawn_cli(config, ["--network", network_id, *extra_args], tmp_path, processes)
    assert await wait_exit(proc) == 0, (tmp_path / "worker-0.log").read_text()
    assert sorted((await controller.fetch_finished_tasks())["y"]) == [0, 1]


async def test_cli_refuses_a_stored_loop_that_is_not_signed(
    *,
    controller: Controller,
    config: RedisConfig,
    network_id: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RUSHPY_SIGNING_KEY", raising=False)
    monkeypatch.delenv("RUSHPY_ALLOW_MODULES", raising=False)
    await store_loop_args(controller, network_id, signed=False)
    proc = spawn_cli(config, ["--network", network_id], tmp_path, processes)
    assert await wait_exit(proc) == 2
    output = (tmp_path / "worker-0.log").read_text()
    assert "refusing" in output and f"worker_loop='{LOOPS}:square_loop'" in output
    assert await n_finished(controller) == 0
    assert len(await controller.worker_info()) == 0
