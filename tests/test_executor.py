"""rushpy.Executor: the same script on ProcessPoolExecutor and on rushpy workers."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
from itertools import repeat
from typing import Any

import pytest

import rushpy
from rushpy import EmbeddedServer, ExecutorShutdownError, RedisConfig, RemoteError, RushError
from rushpy.executor import Executor, RemoteTraceback
from tests.funcs import sleepy


class Odd(Exception):
    pass


def raise_odd(x: int) -> int:
    raise Odd(f"odd {x}")


def script(executor: cf.Executor) -> dict[str, Any]:
    """Written for concurrent.futures: only the executor line differs between runs."""
    out: dict[str, Any] = {"map": list(executor.map(pow, range(20), repeat(2)))}
    futures = [executor.submit(pow, 3, i) for i in range(5)]
    out["submit"] = sorted(f.result() for f in cf.as_completed(futures, timeout=60))
    try:
        executor.submit(divmod, 1, 0).result(timeout=60)
    except ZeroDivisionError as exc:
        out["error"] = (type(exc).__name__, str(exc))
    return out


def test_same_script_on_process_pool_and_rushpy(config: RedisConfig) -> None:
    with cf.ProcessPoolExecutor(2) as pool:
        expected = script(pool)
    with rushpy.Executor(n_workers=2, config=config) as ex:
        got = script(ex)
    assert got == expected
    assert got["map"] == [i * i for i in range(20)]


def test_map_chunks_shuffle_and_order(config: RedisConfig) -> None:
    with Executor(n_workers=1, config=config) as ex:
        assert list(ex.map(pow, range(10), repeat(3), chunksize=4, shuffle=True)) == [i**3 for i in range(10)]
        assert ex.controller.n_tasks() == 3  # ten calls in chunks of four: three tasks
        with pytest.raises(rushpy.ConfigError, match="chunksize"):
            ex.map(pow, [1], [1], chunksize=0)


def test_exception_carries_the_worker_traceback(config: RedisConfig) -> None:
    with Executor(n_workers=1, config=config) as ex:
        with pytest.raises(ZeroDivisionError) as info:
            ex.submit(divmod, 1, 0).result(timeout=60)
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "Traceback" in str(info.value.__cause__)
        # A type the caller cannot re-create: RemoteError naming it, traceback attached.
        with pytest.raises(RemoteError, match="Odd: odd 3") as remote:
            ex.submit(raise_odd, 3).result(timeout=60)
        assert "raise Odd" in remote.value.__cause__.tb  # type: ignore[union-attr]
        with pytest.raises(Odd.__mro__[1]):  # map re-raises too
            list(ex.map(raise_odd, [1]))


def test_cancel_queued_work_and_map_timeout(config: RedisConfig) -> None:
    with Executor(n_workers=1, config=config) as ex:
        busy = ex.submit(sleepy, 1, 1.0)
        queued = ex.submit(pow, 2, 2)
        assert queued.cancel()
        assert queued.cancelled()
        assert ex.controller.fetch_task(queued.key)["state"] == "failed"  # type: ignore[attr-defined]
        assert busy.result(timeout=60) == {"y": 1}
        assert not busy.cancel()  # done: nothing to cancel
        with pytest.raises(TimeoutError):
            list(ex.map(sleepy, [1], [5.0], timeout=0.1))


def test_shutdown_without_wait_fails_open_futures(config: RedisConfig) -> None:
    ex = Executor(config=config)  # no workers: nothing runs
    future = ex.submit(pow, 2, 3)
    ex.shutdown(wait=False)
    with pytest.raises(ExecutorShutdownError, match="shut down before"):
        future.result(timeout=10)
    with pytest.raises(ExecutorShutdownError, match="after shutdown"):
        ex.submit(pow, 1, 1)
    ex.shutdown()  # idempotent


def test_joins_existing_workers(config: RedisConfig, network_id: str) -> None:
    with rushpy.blocking.Controller(network_id, config=config) as rush:
        rush.start_local_workers(1, fun="rushpy.trampoline:run")
        with Executor(network_id, config=config) as ex:
            assert ex.network_id == network_id
            assert ex.submit(pow, 2, 5).result(timeout=60) == 32
        assert rush.n_finished_tasks() == 1  # a given network is kept
        rush.reset()


async def test_async_flavour(config: RedisConfig) -> None:
    ex = await asyncio.to_thread(Executor, n_workers=1, config=config)
    try:
        assert await ex.submit_async(pow, 2, 10) == 1024
        assert await ex.map_async(pow, range(4), repeat(2), chunksize=2) == [0, 1, 4, 9]
    finally:
        await asyncio.to_thread(ex.shutdown)


def _returns(fn: Any, seconds: float = 30) -> None:
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it does not return."""
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn} hung"


def test_shutdown_cancel_futures_with_queued_work_returns(config: RedisConfig) -> None:
    ex = Executor(config=config)  # no workers: the call stays queued
    future = ex.submit(pow, 2, 3)
    _returns(lambda: ex.shutdown(wait=True, cancel_futures=True))
    assert future.cancelled()
    # A cancelled future counts as done for concurrent.futures' waiters.
    assert cf.wait([future], timeout=0).not_done == set()


def test_cancelled_future_is_done_for_waiters(config: RedisConfig) -> None:
    with Executor(config=config) as ex:
        future = ex.submit(pow, 2, 3)
        assert future.cancel()
        done, _ = cf.wait([future], timeout=10)
        assert done == {future}
        assert list(cf.as_completed([future], timeout=10)) == [future]


def test_lost_connection_fails_open_futures() -> None:
    # A private server, stopped under a waiting future: the future gets an error, it never hangs.
    with EmbeddedServer() as srv:
        cfg = srv.config.model_copy(update={"reconnect_budget": 0.5})
        ex = Executor(config=cfg)
        try:
            future = ex.submit(pow, 2, 3)
            srv.stop()
            with pytest.raises(RushError, match="result stream"):
                future.result(timeout=60)
            with pytest.raises(RushError):  # later calls fail at once, with the same cause
                ex.submit(pow, 1, 1).result(timeout=60)
        finally:
            ex.shutdown(wait=False)


def test_map_draws_a_progress_bar_per_state_only_when_asked(
    config: RedisConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    with Executor(n_workers=1, config=config) as ex:
        assert list(ex.map(pow, range(6), repeat(2), progress=True)) == [i * i for i in range(6)]
        drawn = capsys.readouterr().err
        assert "map" in drawn and "6 finished, 0 failed, 0 running, 0 queued" in drawn
        assert list(ex.map(pow, range(3), repeat(2), progress=False)) == [0, 1, 4]
        # Captured standard error is no terminal: the default draws nothing either.
        assert list(ex.map(pow, range(3), repeat(2))) == [0, 1, 4]
        assert capsys.readouterr().err == ""
        with pytest.raises(ZeroDivisionError):
            list(ex.map(divmod, [1, 2], [1, 0], progress=True))
        assert "1 finished, 1 failed" in capsys.readouterr().err
