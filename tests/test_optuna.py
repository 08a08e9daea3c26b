"""The Optuna helper: real studies on local workers, failures told as FAIL, resuming after a stop."""

from __future__ import annotations

import math
from typing import Any

import anyio
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from rushpy import Controller, RedisConfig
from rushpy.errors import ConfigError, RushError
from rushpy.optuna import STUDY_FIELD, TRIAL_FIELD, _column, _Run, _values, optimize, optimize_blocking

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {"x": FloatDistribution(-2.0, 2.0)}


# -- objectives run by the workers (importable as tests.test_optuna:<name>) ----------------------
def quadratic(x: float) -> dict[str, float]:
    if x > 1.0:
        raise ValueError(f"x={x} is too large")
    return {"value": (x - 1.0) ** 2}


def odd_fails(x: int) -> dict[str, float]:
    if x % 2:
        raise ValueError(f"odd x={x}")
    return {"value": float(x)}


def two_objectives(x: float) -> dict[str, list[float]]:
    return {"values": [x, -2 * x]}


def _study(**kwargs: Any) -> optuna.Study:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3), **kwargs)


def _states(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


async def test_study_runs_on_workers_and_failures_are_told(controller: Controller) -> None:
    study = _study()
    told = await optimize(
        study, controller, "tests.test_optuna:quadratic", 12, search_space=SPACE, n_in_flight=3
    )
    assert len(told) == 12
    assert len(study.trials) == 12
    states = _states(study)
    assert "RUNNING" not in states
    assert states["COMPLETE"] >= 1
    assert states["FAIL"] >= 1  # the objective raised for x > 1
    for t in study.trials:
        key = t.user_attrs["rushpy_key"]
        row = await controller.fetch_task(key)
        assert row[TRIAL_FIELD] == t.number
        assert row[STUDY_FIELD] == study.study_name
        if t.state == TrialState.COMPLETE:
            assert t.params["x"] <= 1.0
            assert t.value == pytest.approx((t.params["x"] - 1.0) ** 2)
        else:
            assert t.params["x"] > 1.0
            assert t.user_attrs["rushpy_error"].startswith("ValueError: x=")
    assert study.best_value == min(t.value for t in study.trials if t.value is not None)


async def test_several_objectives_and_a_suggesting_function(controller: Controller) -> None:
    study = _study(directions=["minimize", "maximize"])
    seen: list[int] = []

    def space(trial: optuna.Trial) -> None:
        trial.suggest_float("x", 0.0, 1.0)

    await optimize(
        study,
        controller,
        "tests.test_optuna:two_objectives",
        4,
        search_space=space,
        n_in_flight=2,
        n_workers=1,
        callbacks=[lambda _study, frozen: seen.append(frozen.number)],
    )
    assert sorted(seen) == [0, 1, 2, 3]
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        assert t.values == pytest.approx([t.params["x"], -2 * t.params["x"]])


async def test_workers_of_the_network_run_trials_without_fun(controller: Controller) -> None:
    await controller.start_local_workers(1, fun="tests.test_optuna:odd_fails")
    await controller.stop_workers()
    study = _study()
    for x in (1, 2):
        study.enqueue_trial({"x": x})
    # fun=None with n_workers: workers from the network's stored start arguments.
    await optimize(study, controller, None, 2, search_space={"x": IntDistribution(0, 9)}, n_workers=1)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]


async def test_results_of_other_tasks_in_the_stream_are_skipped(controller: Controller) -> None:
    await controller.start_local_workers(1, fun="tests.test_optuna:quadratic")
    other = await controller.push_tasks([{"x": 0.0}, {"x": 2.0}])  # not trials: one finishes, one fails
    await controller.wait_for_tasks(other, timeout=60)
    study = _study()
    told = await optimize(study, controller, None, 2, search_space={"x": FloatDistribution(-1.0, 0.0)})
    assert len(told) == 2
    assert _states(study) == {"COMPLETE": 2}


def test_extra_column_named_like_an_input() -> None:
    assert _column({"optuna_trial": 5, "xs_extra.optuna_trial": 2}, "xs_extra", "optuna_trial") == 2
    assert _column({"optuna_trial": 2}, "xs_extra", "optuna_trial") == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_trials": -1}, "n_trials"),
        ({"n_trials": True}, "n_trials"),
        ({"n_in_flight": 0}, "n_in_flight"),
        ({"search_space": 5}, "search_space"),
        ({"search_space": {"x": (0, 1)}}, r"\['x'\]"),
    ],
)
async def test_bad_arguments(controller: Controller, kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"n_trials": 1, "search_space": SPACE, "n_in_flight": 1} | kwargs
    study = _study()
    with pytest.raises(ConfigError, match=match):
        await optimize(study, controller, None, **args)
    assert study.trials == []


async def test_a_failed_push_fails_its_trials(controller: Controller) -> None:
    study = _study()
    with pytest.raises(RushError, match="max_retries"):
        await optimize(study, controller, None, 2, search_space=SPACE, n_in_flight=2, max_retries=-1)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert "could not be pushed" in study.trials[0].user_attrs["rushpy_error"]


def test_values_of_a_row() -> None:
    assert _values({"value": 2}, {"x": 1}, 1) == [2.0]
    assert _values({"values": [1, 2]}, {}, 2) == [1.0, 2.0]
    assert _values({"value": (1, 2)}, {}, 2) == [1.0, 2.0]
    # A parameter called "value": the result is in column "ys.value".
    assert _values({"value": 0.5, "ys.value": 3.0}, {"value": 0.5}, 1) == [3.0]
    assert "no 'value'" in str(_values({"value": 0.5}, {"value": 0.5}, 1))
    assert "no 'value'" in str(_values({"y": 1.0}, {}, 1))
    assert "2 objective(s)" in str(_values({"value": 1.0}, {}, 2))
    assert "1 objective(s)" in str(_values({"value": True}, {}, 1))
    assert "1 objective(s)" in str(_values({"value": "low"}, {}, 1))
    assert "NaN" in str(_values({"value": math.nan}, {}, 1))


async def test_unusable_result_is_a_fail(controller: Controller) -> None:
    study = _study()
    trial = study.ask({"x": FloatDistribution(0, 1)})
    _Run(study, controller, []).tell(trial, {"key": "k", "state": "finished", "y": 1.0})
    assert study.trials[0].state == TrialState.FAIL
    assert "no 'value'" in study.trials[0].user_attrs["rushpy_error"]


async def test_a_trial_told_elsewhere_stays_as_told(controller: Controller) -> None:
    study = _study()
    trial = study.ask({"x": FloatDistribution(0, 1)})
    study.tell(trial, 0.25)
    run = _Run(study, controller, [])
    run.tell(trial, {"key": "k", "state": "failed", "condition": {"type": "ValueError", "message": "m"}})
    run.tell(trial, {"key": "k", "state": "finished", "value": 9.0})
    frozen = study.trials[0]
    assert frozen.state == TrialState.COMPLETE
    assert frozen.value == 0.25
    assert "rushpy_error" not in frozen.user_attrs


async def _stop_when_queued(study: optuna.Study, rush: Controller, n: int, **kwargs: Any) -> None:
    """Run optimize without workers and stop it (cancel) once ``n`` tasks are queued."""

    async def run() -> None:
        await optimize(study, rush, None, n, n_in_flight=n, **kwargs)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            while await rush.n_queued_tasks() < n:
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()


async def test_resume_reattaches_queued_trials_and_fails_lost_ones(
    config: RedisConfig, network_id: str
) -> None:
    study = _study()
    async with Controller(network_id, config=config, shutdown_timeout=5) as first:
        await _stop_when_queued(study, first, 3, search_space=SPACE)
    assert _states(study) == {"RUNNING": 3}
    lost = study.ask(SPACE)  # asked on this network, never pushed: the controller died in between
    lost.set_user_attr("rushpy_network", network_id)
    foreign = study.ask(SPACE)  # another client's trial: left alone
    space = {"x": FloatDistribution(-2.0, 0.5)}  # never fails
    async with Controller(network_id, config=config, shutdown_timeout=5) as second:
        try:
            told = await optimize(study, second, "tests.test_optuna:quadratic", 2, search_space=space)
        finally:
            await second.reset()
    assert len(told) == 3 + 1 + 2
    by_number = {t.number: t for t in study.trials}
    assert [by_number[n].state for n in (0, 1, 2)] == [TrialState.COMPLETE] * 3  # re-attached, run
    assert by_number[lost.number].state == TrialState.FAIL
    assert "lost" in by_number[lost.number].user_attrs["rushpy_error"]
    assert by_number[foreign.number].state == TrialState.RUNNING
    study.tell(foreign, state=TrialState.FAIL)
    assert "RUNNING" not in _states(study)
    assert _states(study) == {"COMPLETE": 5, "FAIL": 2}


async def test_resume_tells_results_that_arrived_meanwhile(config: RedisConfig, network_id: str) -> None:
    study = _study()
    for x in (1, 2, 3, 4):
        study.enqueue_trial({"x": x})
    space = {"x": IntDistribution(0, 9)}
    async with Controller(network_id, config=config, shutdown_timeout=5) as first:
        await _stop_when_queued(study, first, 4, search_space=space)
        # The helper is gone; workers still run the trials' tasks.
        await first.start_local_workers(2, fun="tests.test_optuna:odd_fails")
        keys = [t.user_attrs["rushpy_key"] for t in study.trials]
        await first.wait_for_tasks(keys, timeout=60)
    assert _states(study) == {"RUNNING": 4}
    async with Controller(network_id, config=config, shutdown_timeout=5) as second:
        try:
            told = await optimize(study, second, None, 0, search_space=space)
        finally:
            await second.reset()
    assert len(told) == 4
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE] * 2
    assert study.trials[2].user_attrs["rushpy_error"] == "ValueError: odd x=3"
    assert [t.value for t in study.trials] == [None, 2.0, None, 4.0]


def _blocking_run(config: RedisConfig, network_id: str) -> optuna.Study:
    study = _study()
    told = optimize_blocking(
        study, network_id, "tests.test_optuna:quadratic", 3, config=config, search_space=SPACE, n_in_flight=2
    )
    assert len(told) == 3
    return study


def test_blocking_wrapper(config: RedisConfig, network_id: str) -> None:
    study = _blocking_run(config, network_id)
    assert len(study.trials) == 3
    assert "RUNNING" not in _states(study)


async def test_blocking_wrapper_inside_a_running_loop(config: RedisConfig, network_id: str) -> None:
    # As from a notebook cell: the caller's own loop is running.
    study = _blocking_run(config, network_id)
    assert "RUNNING" not in _states(study)
