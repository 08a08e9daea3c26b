"""Running the user function on tasks: on the event loop, in a thread, or in a child process.

``async def`` functions run on the event loop; a task's timeout cancels it at
its deadline. Plain functions run off the loop in a worker thread (one per
concurrency slot), so registration, heartbeats, pops and writes never stall;
a plain function whose task has a timeout runs in a child process instead,
killed at the deadline (:mod:`rushpy.worker.child`).

A cancelled task is interrupted where it runs: its async task is cancelled,
its child process killed, or its thread interrupted
(:mod:`rushpy.worker.interrupt`), through the worker's
:class:`~rushpy.worker.tracking.TaskTracker`. It has no outcome: the
controller already recorded the failure.

A call gets the task's inputs, the network's constants and resolved large
objects (:mod:`rushpy.worker.inputs`) as keyword arguments, plus ``seed`` (the
task's seed, ``None`` without one) and ``rng`` (``numpy.random.default_rng(seed)``,
fresh entropy without a seed) when the function declares those parameters by
name; an input or constant of the same name wins. The generator is built where
the function runs (thread, event loop or child process).

A task pushed with ``capture_output=True`` gets its stdout and warnings
captured where it runs and stored with its outcome (:mod:`rushpy.worker.capture`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.to_thread

from rushpy.functions import injected_parameters, is_async_function
from rushpy.logs import log_worker
from rushpy.models import Condition, PoppedTask
from rushpy.seeds import make_rng
from rushpy.store.encoding import encode_field
from rushpy.store.tasks import Encoded
from rushpy.worker.capture import Captured, attach_output, capturing, wants_capture
from rushpy.worker.child import ChildProcess
from rushpy.worker.inputs import TaskInputs
from rushpy.worker.interrupt import TaskInterrupted, ThreadInterrupter
from rushpy.worker.tracking import TaskTracker

__all__ = ["Executor", "Outcome", "failed"]

Outcome = tuple[str, int, bool, dict[str, Any]]
"""``(key, attempt, ok, fields)``: fields are ``ys`` for success, ``condition`` for failure."""

Calls = list[tuple[PoppedTask, dict[str, Any]]]
"""Tasks with the keyword arguments of their call (``rng`` not yet added)."""


def _with_rng(task: PoppedTask, kwargs: dict[str, Any], wants_rng: bool) -> dict[str, Any]:
    """``kwargs`` with the task's generator, if the function declares ``rng`` and nothing fills it."""
    if not wants_rng or "rng" in kwargs:
        return kwargs
    return {**kwargs, "rng": make_rng(task.seed)}


def _check_result(ys: Any, task: PoppedTask) -> Outcome:
    if ys is None:
        ys = {}
    if not isinstance(ys, Mapping):
        condition = Condition(
            "TypeError",
            f"the function returned {type(ys).__name__} {ys!r:.80}; return a mapping such as {{'y': value}}",
        )
        return failed(task, condition)
    try:
        # Encoded once, here: the store sends these bytes as they are (Encoded).
        encoded = Encoded(encode_field(dict(ys)))
    except Exception as exc:  # the value cannot be stored: fail this task only
        return failed(task, Condition.from_exception(exc))
    return task.key, task.attempt, True, {"ys": encoded}


def failed(task: PoppedTask, condition: Condition | BaseException) -> Outcome:
    """The outcome of a task that failed with ``condition``."""
    if isinstance(condition, BaseException):
        condition = Condition.from_exception(condition)
    return task.key, task.attempt, False, {"condition": condition.to_dict()}


def _timed_out(task: PoppedTask) -> Outcome:
    return failed(task, Condition("TaskTimeout", f"the task timed out after {task.timeout:g} s"))


def _run_sync_batch(
    fun: Callable[..., Any],
    calls: Calls,
    tracker: TaskTracker,
    interrupter: ThreadInterrupter,
    wants_rng: bool,
) -> list[Outcome]:
    """Run plain-function tasks one after the other (in a worker thread)."""
    out = []
    for task, kwargs in calls:
        if tracker.is_cancelled(task.key):
            continue
        captured: Captured | None = None
        try:
            if wants_capture(task.xs_extra):
                with capturing(True) as captured:
                    ys = _call_sync(
                        fun, task, kwargs, tracker=tracker, interrupter=interrupter, wants_rng=wants_rng
                    )
            else:  # no capture context at all: it costs as much as a no-op task
                ys = _call_sync(
                    fun, task, kwargs, tracker=tracker, interrupter=interrupter, wants_rng=wants_rng
                )
        except TaskInterrupted:
            continue  # cancelled: the controller recorded the failure
        except Exception as exc:  # the function's failure fails its task; the worker goes on
            out.append(attach_output(failed(task, exc), captured))
        else:
            out.append(attach_output(_check_result(ys, task), captured))
    return out


def _call_sync(
    fun: Callable[..., Any],
    task: PoppedTask,
    kwargs: dict[str, Any],
    *,
    tracker: TaskTracker,
    interrupter: ThreadInterrupter,
    wants_rng: bool,
) -> Any:
    """Call ``fun`` for one task in this thread, interruptible by the task's cancellation."""
    try:
        interrupter.begin(task.key)
        if tracker.is_cancelled(task.key):
            # Cancelled between the caller's check and begin(): its interrupt
            # found no thread running the task, so stop here instead.
            raise TaskInterrupted
        return fun(**_with_rng(task, kwargs, wants_rng))
    finally:
        interrupter.end()


class Executor:
    """Runs one function on batches of tasks, for every slot of a worker loop.

    Args:
        fun: Called with each task's ``xs`` as keyword arguments; returns a mapping.
        tracker: Tells which tasks were cancelled and how to interrupt a running one.
        concurrency: Worker threads for a plain function (one per slot).
        inputs: The worker's constants and large objects.

    """

    def __init__(
        self,
        fun: Callable[..., Any],
        tracker: TaskTracker,
        concurrency: int,
        inputs: TaskInputs,
    ) -> None:
        self.fun = fun
        self.is_async = is_async_function(fun)
        injected = injected_parameters(fun)
        self._wants_seed = "seed" in injected
        self._wants_rng = "rng" in injected
        self._inputs = inputs
        self._tracker = tracker
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._interrupter = ThreadInterrupter()

    def needs_child(self, tasks: list[PoppedTask]) -> bool:
        """Whether some of ``tasks`` must run in a child process (plain function, timeout)."""
        return not self.is_async and any(t.timeout is not None for t in tasks)

    async def run_batch(self, tasks: list[PoppedTask], child: ChildProcess | None) -> list[Outcome]:
        """Run ``tasks``; returns the outcomes to write (none for cancelled tasks).

        Cancelled tasks are no longer tracked afterwards. ``child`` runs the tasks
        with a timeout of a plain function (see :meth:`needs_child`).
        """
        out = await self._run(tasks, child)
        reported = {o[0] for o in out}
        for task in tasks:
            if task.key not in reported:
                self._tracker.forget(task.key)
        return out

    async def _prepare(self, tasks: list[PoppedTask]) -> tuple[Calls, list[Outcome]]:
        """Each task's keyword arguments (with ``seed`` when declared), or its failure."""
        calls, unusable = await self._inputs.prepare(tasks)
        out = [failed(task, condition) for task, condition in unusable]
        if self._wants_seed:
            calls = [(t, kw if "seed" in kw else {**kw, "seed": t.seed}) for t, kw in calls]
        return calls, out

    async def _run(self, tasks: list[PoppedTask], child: ChildProcess | None) -> list[Outcome]:
        calls, out = await self._prepare(tasks)
        if self.is_async:
            with log_worker(self._tracker.worker_id):  # the functions' records: once per batch
                index = 0
                while index < len(calls):
                    index = await self._run_async(calls, index, out)
            return out
        untimed = [(t, kw) for t, kw in calls if t.timeout is None]
        if untimed:
            out += await self._run_in_thread(untimed)
        for task, kwargs in calls:
            if task.timeout is None or self._tracker.is_cancelled(task.key):
                continue
            assert child is not None, "tasks with a timeout of a plain function need a child process"
            outcome = await self._run_in_child(child, task, kwargs)
            if outcome is not None:
                out.append(outcome)
        return out

    async def _run_async(self, calls: Calls, index: int, out: list[Outcome]) -> int:
        """Run ``calls[index:]`` on the event loop until one is stopped; returns where to go on.

        One cancel scope serves a run of tasks, for both their deadlines and
        their cancellations: a scope per task cost about 30 % of a no-op
        task's CPU. A deadline or a cancellation stops the task running at
        the time (the scope's deadline is that task's own, infinite
        otherwise); the next call goes on after it, in a fresh scope.
        """
        scope = anyio.CancelScope()
        current: PoppedTask | None = None  # the task running when the scope was cancelled
        captured: Captured | None = None
        with scope:
            # Stop at a cancellation that the function swallowed (it returned):
            # the scope stays cancelled and would stop the next task too.
            while index < len(calls) and not scope.cancel_called:
                task, kwargs = calls[index]
                index += 1
                if self._tracker.is_cancelled(task.key):
                    continue
                current, captured = task, None
                if task.timeout is not None:
                    scope.deadline = anyio.current_time() + task.timeout
                self._tracker.register(task.key, scope.cancel)
                try:
                    if wants_capture(task.xs_extra):
                        with capturing(True) as captured:
                            outcome = await self._call_async(task, kwargs)
                    else:
                        outcome = await self._call_async(task, kwargs)
                finally:
                    self._tracker.unregister(task.key)
                # No await from the function's return to here: a deadline cannot
                # fire in between, so this task's outcome stands.
                out.append(attach_output(outcome, captured))
                current = None
                if task.timeout is not None:
                    scope.deadline = math.inf
        if current is not None and not self._tracker.is_cancelled(current.key):
            out.append(attach_output(_timed_out(current), captured))  # what it printed before its deadline
        # A cancelled task has no outcome: the controller recorded the failure.
        return index

    async def _call_async(self, task: PoppedTask, kwargs: dict[str, Any]) -> Outcome:
        try:
            ys = await self.fun(**_with_rng(task, kwargs, self._wants_rng))
        except Exception as exc:  # the function's failure fails its task; the worker goes on
            return failed(task, exc)
        return _check_result(ys, task)

    async def _run_in_thread(self, calls: Calls) -> list[Outcome]:
        # Registered bare (no context per task): the thread checks each task's
        # cancellation before it starts it, and one log_worker block covers the
        # thread (anyio copies the context into it).
        tracker = self._tracker
        with log_worker(tracker.worker_id):
            for task, _ in calls:
                tracker.register(task.key, functools.partial(self._interrupter.interrupt, task.key))
            try:
                return await self._to_thread(calls)
            finally:
                for task, _ in calls:
                    tracker.unregister(task.key)

    async def _to_thread(self, calls: Calls) -> list[Outcome]:
        # abandon_on_cancel: a kill must not wait for a plain function to return.
        return await anyio.to_thread.run_sync(
            _run_sync_batch,
            self.fun,
            calls,
            self._tracker,
            self._interrupter,
            self._wants_rng,
            limiter=self._limiter,
            abandon_on_cancel=True,
        )

    async def _run_in_child(
        self, child: ChildProcess, task: PoppedTask, kwargs: dict[str, Any]
    ) -> Outcome | None:
        with self._tracker.interruptible(task.key, child.interrupt):
            # The child builds the generator itself (it does not travel through msgpack).
            kind, value = await child.run(
                kwargs, task.timeout, seed=task.seed, capture=wants_capture(task.xs_extra)
            )
        if kind == "ok":
            return attach_output(_check_result(value, task), child.output)
        if kind == "timeout":
            return _timed_out(task)  # the killed child's output is lost with it
        if kind == "cancelled":
            return None
        return attach_output(failed(task, value), child.output)
