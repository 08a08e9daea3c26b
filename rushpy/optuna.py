"""Run an Optuna study's trials on rushpy workers (ask-and-tell), N in flight.

:func:`optimize` asks the study for trials, pushes each trial's parameters as
one task, keeps ``n_in_flight`` tasks queued or running, and tells every result
as it arrives on the controller's result stream (``fetch_new_tasks(states=
("finished", "failed"))``). A task that fails for good (the function raised,
timed out, returned no usable value, its worker was lost) is told as
``TrialState.FAIL``: no trial the helper asked is left ``RUNNING`` when it
returns.

Workers run a plain rushpy function that takes the trial's parameters as
keyword arguments and returns ``{"value": float}``, or ``{"values": [...]}``
for a study with several objectives.

It is resumable: each task carries the study name and trial number in its
``xs_extra`` (``optuna_study``, ``optuna_trial``) and each trial the network
and task key in its user attributes (``rushpy_network``, ``rushpy_key``). When
:func:`optimize` starts, it re-attaches to the study's ``RUNNING`` trials that
it asked on this network earlier (a controller that was stopped or crashed):
tasks still queued or running are waited for, results that arrived meanwhile
are told, and trials whose task is gone (or failed) are told ``FAIL``.

Optuna is an optional dependency (``pip install 'rushpy[optuna]'``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any

import optuna
from anyio.from_thread import start_blocking_portal
from optuna.distributions import BaseDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from rushpy.config import RedisConfig
from rushpy.controller import Controller
from rushpy.errors import ConfigError

__all__ = ["STUDY_FIELD", "TRIAL_FIELD", "SearchSpace", "optimize", "optimize_blocking"]

STUDY_FIELD = "optuna_study"
"""``xs_extra`` entry of a trial's task: the study's name."""

TRIAL_FIELD = "optuna_trial"
"""``xs_extra`` entry of a trial's task: the trial's number in the study."""

SearchSpace = Mapping[str, BaseDistribution] | Callable[[optuna.Trial], object]
"""Distributions by parameter name, or a function that calls ``trial.suggest_*``."""

Callback = Callable[[optuna.Study, FrozenTrial], None]

# Seconds one wait on the result stream lasts; the loop simply waits again, so
# this only bounds how long a cancelled helper takes to notice nothing.
_WAIT = 30.0


async def optimize(
    study: optuna.Study,
    controller: Controller,
    fun: Callable[..., Any] | str | None,
    n_trials: int,
    *,
    search_space: SearchSpace,
    n_in_flight: int = 1,
    n_workers: int | None = None,
    max_retries: int = 0,
    task_timeout: float | None = None,
    callbacks: Sequence[Callback] = (),
) -> list[FrozenTrial]:
    """Run ``n_trials`` new trials of ``study`` on the network's workers, ``n_in_flight`` at a time.

    Example:
        >>> study = optuna.create_study()
        >>> async with rushpy.Controller("hpo") as rush:
        ...     await rushpy.optuna.optimize(
        ...         study, rush, "mypkg.objectives:train", 50,
        ...         search_space={"lr": optuna.distributions.FloatDistribution(1e-4, 1, log=True)},
        ...         n_in_flight=8,
        ...     )

    Args:
        study: The study; any storage (in memory for one process, an RDB or
            journal storage to resume from another process).
        controller: An entered controller of the network that runs the trials.
        fun: The function workers run (import path ``module:function`` or a
            function): it gets the trial's parameters as keyword arguments and
            returns ``{"value": float}`` (``{"values": [...]}`` for several
            objectives). With a function, local workers are started with it;
            ``None``: the network's workers (started before, or remote) run them.
        n_trials: New trials to ask in this call (like ``study.optimize``);
            trials re-attached from an earlier run come on top. To cap the
            study's total, pass ``budget - len(study.trials)``.
        search_space: Distributions by parameter name (passed to
            ``study.ask``), or a function that calls ``trial.suggest_*`` on the
            asked trial (for conditional spaces); its return value is ignored.
        n_in_flight: Tasks kept queued or running at once.
        n_workers: Local workers to start: with ``fun``, default
            ``n_in_flight``; without, the network's stored start arguments are
            used (``None``: start none).
        max_retries: Retries of a task whose function fails (see ``push_tasks``).
        task_timeout: Seconds a task may run (``None``: no limit).
        callbacks: Called as ``callback(study, frozen_trial)`` after each tell,
            as Optuna's ``study.optimize`` calls its callbacks.

    Returns:
        The trials this call told, in the order they were told.

    Raises:
        ConfigError: a bad ``n_trials``, ``n_in_flight`` or ``search_space``.
        TaskError: a bad ``max_retries`` or ``task_timeout`` (the trials asked
            for that push are told ``FAIL`` first).

    Cancelling it (``anyio.move_on_after``, Ctrl-C, a crash) leaves the
    trials in flight ``RUNNING`` and their tasks in the network: call it again
    (with a new controller of the same network) to re-attach to them.

    """
    _check(n_trials, n_in_flight, search_space)
    if fun is not None:
        await controller.start_local_workers(n_in_flight if n_workers is None else n_workers, fun=fun)
    elif n_workers:
        await controller.start_local_workers(n_workers)
    run = _Run(study, controller, list(callbacks))
    await run.reattach()
    asked = 0
    while True:
        room = min(n_trials - asked, n_in_flight - len(run.in_flight))
        if room > 0:
            await run.push([_ask(study, search_space) for _ in range(room)], max_retries, task_timeout)
            asked += room
        if not run.in_flight:
            return run.told
        for row in await controller.fetch_new_tasks(timeout=_WAIT, states=("finished", "failed")):
            trial = run.in_flight.pop(row["key"], None)
            if trial is not None:  # not a result of this run (an earlier one, another client)
                run.tell(trial, row)


def optimize_blocking(
    study: optuna.Study,
    network_id: str,
    fun: Callable[..., Any] | str | None,
    n_trials: int,
    *,
    config: RedisConfig | None = None,
    **options: Any,
) -> list[FrozenTrial]:
    """:func:`optimize` for code without ``async``: opens a controller of ``network_id`` for the run.

    The controller lives on an event loop in a thread of its own (an anyio
    blocking portal), so this works from scripts, from notebook cells (whose
    own loop is running) and from several threads; local workers it starts
    stop when it returns.

    Args:
        study: As in :func:`optimize`.
        network_id: The network to run the trials on.
        fun: As in :func:`optimize`.
        n_trials: As in :func:`optimize`.
        config: Server settings (default: from the environment, else an
            embedded server, as ``Controller``).
        **options: Keyword arguments of :func:`optimize` (``search_space``,
            ``n_in_flight``, ...).

    Returns:
        The trials told, as :func:`optimize`.

    """

    async def main() -> list[FrozenTrial]:
        async with Controller(network_id, config=config) as rush:
            return await optimize(study, rush, fun, n_trials, **options)

    with start_blocking_portal("asyncio") as portal:
        return portal.call(main)


def _check(n_trials: Any, n_in_flight: Any, search_space: Any) -> None:
    """Refuse bad arguments before anything is asked or started."""
    for name, value, least in (("n_trials", n_trials, 0), ("n_in_flight", n_in_flight, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{name} must be an integer >= {least}, got {value!r}")
    if not (isinstance(search_space, Mapping) or callable(search_space)):
        raise ConfigError(
            "search_space must map parameter names to optuna distributions or be a function "
            f"that calls trial.suggest_*; got {type(search_space).__name__}"
        )
    if isinstance(search_space, Mapping):
        bad = [k for k, v in search_space.items() if not isinstance(v, BaseDistribution)]
        if bad:
            raise ConfigError(
                f"search_space entries {bad} are not optuna distributions; use e.g. "
                "optuna.distributions.FloatDistribution(0.0, 1.0)"
            )


def _ask(study: optuna.Study, search_space: SearchSpace) -> optuna.Trial:
    """Ask one trial and sample its parameters."""
    if isinstance(search_space, Mapping):
        return study.ask(dict(search_space))
    trial = study.ask()
    search_space(trial)
    return trial


def _column(row: Mapping[str, Any], group: str, name: str) -> Any:
    """Entry ``name`` of ``group`` in a flat row: ``group.name`` when an earlier column took ``name``."""
    prefixed = f"{group}.{name}"
    return row[prefixed] if prefixed in row else row.get(name)


class _Run:
    """The trials in flight of one :func:`optimize` call, by task key, and the trials it told."""

    def __init__(self, study: optuna.Study, controller: Controller, callbacks: list[Callback]) -> None:
        self.study = study
        self.controller = controller
        self.callbacks = callbacks
        self.in_flight: dict[str, optuna.Trial] = {}
        self.told: list[FrozenTrial] = []

    async def push(self, trials: list[optuna.Trial], max_retries: int, task_timeout: float | None) -> None:
        """Push one task per trial; if the push fails, tell those trials ``FAIL`` and raise."""
        network = self.controller.network_id
        for trial in trials:
            # Before the push: a trial marked so, RUNNING and without a task is a lost one.
            trial.set_user_attr("rushpy_network", network)
        try:
            keys = await self.controller.push_tasks(
                [t.params for t in trials],
                [{STUDY_FIELD: self.study.study_name, TRIAL_FIELD: t.number} for t in trials],
                max_retries=max_retries,
                timeouts=task_timeout,
            )
        except BaseException as exc:
            for trial in trials:
                self._fail(trial, f"the task could not be pushed: {type(exc).__name__}: {exc}")
            raise
        for trial, key in zip(trials, keys, strict=True):
            trial.set_user_attr("rushpy_key", key)
            self.in_flight[key] = trial

    async def reattach(self) -> None:
        """Take over this network's RUNNING trials of the study from an earlier run."""
        network = self.controller.network_id
        running = [
            t
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.user_attrs.get("rushpy_network") == network
        ]
        if not running:
            return
        tasks: dict[Any, dict[str, Any]] = {}
        for row in await self.controller.fetch_tasks():
            if _column(row, "xs_extra", STUDY_FIELD) == self.study.study_name:
                tasks[_column(row, "xs_extra", TRIAL_FIELD)] = row
        for frozen in running:
            # A live handle on the stored trial (Optuna has no public lookup by number).
            trial = optuna.Trial(self.study, frozen._trial_id)
            found = tasks.get(frozen.number)
            if found is None:
                self._fail(trial, f"lost: no task of this trial in network {network!r}")
            elif found["state"] in ("finished", "failed"):
                self.tell(trial, found)
            else:
                self.in_flight[found["key"]] = trial

    def tell(self, trial: optuna.Trial, row: Mapping[str, Any]) -> None:
        """Tell the outcome of ``trial``'s task (its row): the values, or ``FAIL`` with the reason."""
        if row["state"] == "finished":
            values = _values(row, trial.params, len(self.study.directions))
            if isinstance(values, list):
                self._done(self.study.tell(trial, values, skip_if_finished=True))
                return
            self._fail(trial, values)
            return
        condition = row.get("condition") or {}
        self._fail(trial, f"{condition.get('type', 'Error')}: {condition.get('message', '')}")

    def _fail(self, trial: optuna.Trial, reason: str) -> None:
        """Tell ``trial`` failed, recording ``reason`` in its user attribute ``rushpy_error``."""
        # Told by someone else meanwhile: no attribute, and the tell below leaves it as it is.
        with suppress(UpdateFinishedTrialError):
            trial.set_user_attr("rushpy_error", reason)
        self._done(self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True))

    def _done(self, frozen: FrozenTrial) -> None:
        self.told.append(frozen)
        for callback in self.callbacks:
            callback(self.study, frozen)


def _values(row: Mapping[str, Any], params: Mapping[str, Any], n_objectives: int) -> list[float] | str:
    """The objective values in a finished row, or why there are none usable."""
    expected = "{'value': float}" if n_objectives == 1 else f"{{'values': [{n_objectives} floats]}}"
    for name in ("values", "value"):
        # A result named like a parameter is in column "ys.<name>" (the inputs come first).
        column = f"ys.{name}" if name in params else name
        if column in row:
            raw = row[column]
            break
    else:
        return f"the function returned no 'value'; return {expected}"
    values = list(raw) if isinstance(raw, list | tuple) else [raw]
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if len(values) != n_objectives or not numbers:
        return (
            f"the function returned {name}={raw!r}; the study has {n_objectives} objective(s): "
            f"return {expected}"
        )
    if any(math.isnan(v) for v in values):
        return f"the function returned {name}={raw!r}: NaN is no value"
    return [float(v) for v in values]
