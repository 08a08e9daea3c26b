"""The joblib backend: the same joblib script on loky and on rushpy, and GridSearchCV on rushpy workers."""

from __future__ import annotations

import functools
import math
import threading
from typing import Any

import joblib
import pytest
from joblib import Parallel, delayed

import rushpy
import rushpy.joblib  # registers the backend
from rushpy import ConfigError, RedisConfig
from rushpy.blocking import Controller as BlockingController
from rushpy.executor import RemoteTraceback
from rushpy.joblib import BACKEND, RushpyBackend, run_batch


class Unlucky(Exception):
    """Not a builtin: the caller must still get this type back (it travels pickled)."""


def collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise Unlucky(f"unlucky {x}")
    return x


def script() -> dict[str, Any]:
    """Written for joblib: only the backend line around it differs between runs."""
    offset = 100

    def shifted(x: int) -> float:  # a closure: joblib's batches travel pickled
        return math.sqrt(x + offset)

    out: dict[str, Any] = {
        "collatz": Parallel(n_jobs=2)(delayed(collatz_steps)(n) for n in range(1, 40)),
        "closure": Parallel(n_jobs=2, batch_size=3)(delayed(shifted)(x) for x in range(10)),
        "generator": list(Parallel(n_jobs=2, return_as="generator")(delayed(abs)(-x) for x in range(5))),
        "unordered": sorted(
            Parallel(n_jobs=2, return_as="generator_unordered")(delayed(abs)(-x) for x in range(5))
        ),
    }
    try:
        Parallel(n_jobs=2)(delayed(fail_on)(x, 4) for x in range(8))
    except Unlucky as exc:
        out["error"] = (type(exc).__name__, str(exc))
    return out


@pytest.fixture
def blocking(config: RedisConfig, network_id: str) -> Any:
    """A blocking controller of the test's network; the network is reset afterwards."""
    with BlockingController(network_id, config=config) as rush:
        try:
            yield rush
        finally:
            rush.reset(workers=True)


def test_same_script_on_loky_and_rushpy(config: RedisConfig, network_id: str, blocking: Any) -> None:
    with joblib.parallel_backend("loky", n_jobs=2):
        expected = script()
    with joblib.parallel_backend(BACKEND, network_id=network_id, n_workers=2, config=config):
        got = script()
    assert got == expected
    assert got["error"] == ("Unlucky", "unlucky 4")
    # It ran on rushpy workers: every batch is a task of the network.
    finished = blocking.fetch_finished_tasks()
    assert len(finished) >= 3
    assert {row["worker_id"] for row in finished} <= set(blocking.worker_info()["worker_id"])


def test_grid_search_runs_on_rushpy_workers(config: RedisConfig, network_id: str, blocking: Any) -> None:
    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    X, y = load_iris(return_X_y=True)
    grid = {"C": [0.1, 1.0, 10.0]}
    expected = GridSearchCV(SVC(), grid, cv=3, n_jobs=1).fit(X, y)
    with joblib.parallel_backend(BACKEND, network_id=network_id, n_workers=2, config=config):
        search = GridSearchCV(SVC(), grid, cv=3, n_jobs=2).fit(X, y)
    assert search.best_params_ == expected.best_params_
    assert list(search.cv_results_["mean_test_score"]) == list(expected.cv_results_["mean_test_score"])
    finished = blocking.fetch_finished_tasks()
    assert len(finished) >= 1, "no batch ran as a task in the network"
    assert all(row["worker_id"] for row in finished)
    assert blocking.n_failed_tasks() == 0


def test_exception_keeps_its_type_and_the_worker_traceback(config: RedisConfig, network_id: str) -> None:
    with (
        joblib.parallel_backend(BACKEND, network_id=network_id, n_workers=1, config=config),
        pytest.raises(Unlucky, match="unlucky 0") as info,
    ):
        Parallel(n_jobs=2)(delayed(fail_on)(x, 0) for x in range(2))
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "raise Unlucky" in info.value.__cause__.tb
    with BlockingController(network_id, config=config) as rush:
        rush.reset(workers=True)


def test_given_executor_is_reused_and_not_shut_down(config: RedisConfig) -> None:
    with rushpy.Executor(n_workers=1, config=config, pickle=True) as ex:
        for _ in range(2):  # two Parallel calls on the same workers
            with joblib.parallel_backend(BACKEND, executor=ex):
                assert Parallel(n_jobs=2)(delayed(collatz_steps)(n) for n in (6, 7)) == [8, 16]
        assert ex.controller.n_finished_tasks() >= 2
        assert ex.submit(collatz_steps, 3).result(timeout=60) == 7  # still usable


def test_joins_running_workers(config: RedisConfig, network_id: str, blocking: Any) -> None:
    # Workers of another Executor on the same network; the backend only joins them.
    with rushpy.Executor(network_id, n_workers=3, config=config, pickle=True):
        with joblib.parallel_backend(BACKEND, network_id=network_id, n_workers=0, config=config):
            assert Parallel()(delayed(collatz_steps)(n) for n in range(1, 6)) == [0, 1, 7, 2, 5]
        assert blocking.n_finished_tasks() >= 1  # ran on the network, not in-process
        blocking.wait_for_workers(3, timeout=60)
        backend = RushpyBackend(network_id, 0, config)
        backend.configure(n_jobs=-1)
        try:
            assert backend.effective_n_jobs(-1) == 3  # all running workers
        finally:
            backend.terminate()


def test_one_job_runs_in_process_without_workers(config: RedisConfig, network_id: str, blocking: Any) -> None:
    with joblib.parallel_backend(BACKEND, network_id=network_id, n_workers=2, config=config):
        assert Parallel(n_jobs=1)(delayed(collatz_steps)(n) for n in (1, 2)) == [0, 1]
    assert blocking.n_tasks() == 0
    assert blocking.n_workers() == 0


def test_effective_n_jobs_and_bad_arguments() -> None:
    backend = RushpyBackend(n_workers=3)
    assert backend.effective_n_jobs(-1) == 3
    assert backend.effective_n_jobs(-2) == 2
    assert backend.effective_n_jobs(-9) == 2  # never in-process unless asked (n_jobs=1)
    assert backend.effective_n_jobs(5) == 5
    assert backend.effective_n_jobs(None) == 3  # default: every worker
    with pytest.raises(ValueError, match="n_jobs == 0"):
        backend.effective_n_jobs(0)
    assert RushpyBackend(n_workers=0).effective_n_jobs(-1) == 2  # nothing joined yet
    with pytest.raises(ConfigError, match="n_workers=-1"):
        RushpyBackend(n_workers=-1)
    with pytest.raises(ConfigError, match="n_workers=True"):
        RushpyBackend(n_workers=True)


def test_executor_without_pickle_is_refused(config: RedisConfig) -> None:
    with rushpy.Executor(config=config) as ex, pytest.raises(ConfigError, match="pickle=True"):
        RushpyBackend(executor=ex)


def test_run_batch_wraps_unpicklable_exceptions() -> None:
    def local_failure() -> None:
        class Local(Exception):
            def __reduce__(self) -> Any:
                raise TypeError("cannot pickle")

        raise Local("inner")

    out = run_batch(local_failure)
    assert isinstance(out.exc, RuntimeError)
    assert str(out.exc) == "Local: inner"
    assert "raise Local" in out.tb
    assert run_batch(lambda: [1, 2]) == [1, 2]


def slow(x: int) -> int:
    import time

    time.sleep(0.3)
    return x


def test_a_failure_cancels_the_batches_still_queued(config: RedisConfig, network_id: str) -> None:
    # A given executor outlives the call, so only the abort cancels its queued tasks.
    with (
        rushpy.Executor(network_id, n_workers=1, config=config, pickle=True) as ex,
        joblib.parallel_backend(BACKEND, executor=ex),
        pytest.raises(Unlucky),
    ):
        # One worker: the failing first batch runs while the others wait in the queue.
        Parallel(n_jobs=2, batch_size=1, pre_dispatch="all")(
            [delayed(fail_on)(0, 0)] + [delayed(slow)(x) for x in range(1, 8)]
        )
    with BlockingController(network_id, config=config) as rush:
        try:
            failed = rush.fetch_failed_tasks()
            assert "Cancelled" in {row["condition"]["type"] for row in failed}
            assert rush.n_finished_tasks() < 8
        finally:
            rush.reset(workers=True)


def test_a_batch_ending_after_the_call_is_dropped_quietly(
    config: RedisConfig, caplog: pytest.LogCaptureFixture
) -> None:
    called: list[Any] = []
    with rushpy.Executor(n_workers=1, config=config, pickle=True) as ex:
        backend = RushpyBackend(executor=ex)
        backend.configure(n_jobs=2)
        future = backend.submit(functools.partial(slow, 1), callback=called.append)
        backend.terminate()  # the call ended while its batch still runs
        relayed = threading.Event()
        future.add_done_callback(lambda _: relayed.set())  # runs after the backend's own callbacks
        assert relayed.wait(60)
        assert backend.retrieve_result_callback(future) == 1
    assert called == []
    assert not [r for r in caplog.records if "exception calling callback" in r.getMessage()]
