"""Helpers shared by the test modules."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import redis.asyncio

from rushpy import Controller, RedisConfig

REPO = Path(__file__).resolve().parents[1]
"""The repository root: worker processes run from it, so ``tests.*`` functions import."""


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 5.0
) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await anyio.sleep(0.02)
    pytest.fail(f"timed out after {timeout} s waiting for: {what}")


Waiter = Callable[[Controller, list[str]], Awaitable[Any]]
"""A controller method that waits, called with the keys of the tasks pushed."""


def waiters(timeout: float) -> list[Any]:
    """The controller's waiting methods, each with ``timeout``, as ``pytest.param`` values with ids."""

    async def wait_for_tasks(rush: Controller, keys: list[str]) -> Any:
        return await rush.wait_for_tasks(keys, timeout=timeout)

    async def wait_for_new_tasks(rush: Controller, keys: list[str]) -> Any:
        return await rush.wait_for_new_tasks(timeout=timeout)

    async def fetch_new_tasks(rush: Controller, keys: list[str]) -> Any:
        return await rush.fetch_new_tasks(timeout=timeout)

    async def wait_for_workers(rush: Controller, keys: list[str]) -> Any:
        return await rush.wait_for_workers(n=1, timeout=timeout)

    calls = (wait_for_tasks, wait_for_new_tasks, fetch_new_tasks, wait_for_workers)
    return [pytest.param(call, id=call.__name__) for call in calls]


async def wait_exit(process: subprocess.Popen[bytes], timeout: float = 20) -> int:
    """Wait for ``process`` to exit and return its code; fail the test after ``timeout`` seconds."""
    try:
        return await anyio.to_thread.run_sync(process.wait, timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"process {process.pid} did not exit within {timeout} s")


def worker_env(config: RedisConfig) -> dict[str, str]:
    """Environment of a worker process: the server in ``RUSHPY_REDIS_URL``, ``tests`` importable."""
    env = dict(os.environ)
    env["RUSHPY_REDIS_URL"] = config.to_url(include_password=True)
    env.pop("REDIS_URL", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    return env


def spawn_cli(
    config: RedisConfig, args: list[str], tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    """Start ``python -m rushpy.worker`` with its output in a file; ``processes`` gets it for clean-up."""
    log = tmp_path / f"worker-{len(processes)}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rushpy.worker", *args],
            cwd=REPO,
            env=worker_env(config),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    processes.append(proc)
    return proc


async def stored_fields(client: Any, keys: Any, key: str) -> dict[str, bytes]:
    """A task's fields as stored: its row once it finished, else its hash (``{}``: neither)."""
    from rushpy.stored_rows import unpack_row

    row = await client.hget(keys.rows, key)
    if row is not None:
        flat = unpack_row(row)
        return {bytes(n).decode(): bytes(v) for n, v in zip(flat[::2], flat[1::2], strict=True)}
    raw = await client.hgetall(keys.task(key))
    return {(n.decode() if isinstance(n, bytes) else n): v for n, v in raw.items()}


async def delete_task_data(client: Any, keys: Any, key: str) -> None:
    """Delete a task's stored data, hash and row, as if it had vanished (its indexes stay)."""
    await client.delete(keys.task(key))
    await client.hdel(keys.rows, key)


async def set_stored_field(client: Any, keys: Any, key: str, field: str, value: bytes) -> None:
    """Write one field of a task as stored: into its row once it finished, else into its hash."""
    from rushpy.stored_rows import pack_row

    if await client.hexists(keys.rows, key):
        fields = await stored_fields(client, keys, key)
        await client.hset(keys.rows, key, pack_row({**fields, field: value}))
    else:
        await client.hset(keys.task(key), field, value)


@contextlib.asynccontextmanager
async def raw_client(config: RedisConfig) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain redis-py client of a server a test started (with its password), closed afterwards."""
    client = redis.asyncio.Redis.from_url(config.to_url(include_password=True))
    try:
        yield client
    finally:
        await client.aclose()


async def never_lost_while_running(controller: Controller, key: str) -> int:
    """Wait until task ``key`` runs, then check for lost workers every 0.1 s while it does.

    Fails the test if a check finds any worker lost; returns how many checks ran.
    """
    with anyio.fail_after(30):
        while not await controller.is_running_task(key):
            await anyio.sleep(0.02)
    checks = 0
    while await controller.is_running_task(key):
        assert await controller.detect_lost_workers() == [], f"declared lost after {checks} checks"
        checks += 1
        await anyio.sleep(0.1)
    return checks
