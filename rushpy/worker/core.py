"""The :class:`Worker`: registration, popping, and recording results.

A worker pops from its own priority queue first, then from the shared FIFO
queue. Waiting for work is event-driven: blocking ``BLMOVE`` calls on both
queues move an arriving key straight into the worker's pending list (so a
popped key is never in no state), and a claim script marks it running.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import anyio

from rushpy.config import RedisConfig, heartbeat_settings, validate_identifier
from rushpy.errors import TaskError, WorkerNotRunningError
from rushpy.keys import DEFAULT_PREFIX
from rushpy.logs import get_logger
from rushpy.models import Condition, PoppedTask, WorkerState
from rushpy.reader import NetworkClient
from rushpy.store import new_worker_id
from rushpy.validation import check_keys, check_mappings, check_same_length, check_timeout

__all__ = ["Worker"]

log = get_logger("rushpy.worker")

_BLOCK_SLICE = 30.0
"""Seconds one background BLMOVE blocks before it is re-armed."""


class Worker(NetworkClient):
    """A worker of a network.

    Example:
        >>> async with Worker("my-net") as worker:
        ...     task = await worker.pop_task(timeout=1)
        ...     if task:
        ...         await worker.finish_tasks([task.key], [{"y": task.xs["x"] ** 2}])

    Args:
        network_id: Id of the network.
        config: Server settings; default :meth:`RedisConfig.from_env`.
        worker_id: Id to register under; a unique one is generated if omitted.
        prefix: First component of every key.
        heartbeat_period: Seconds between heartbeats; ``None`` keeps no heartbeat.
        heartbeat_expire: Seconds after the last beat at which the heartbeat key
            expires (default three periods; at least two).

    """

    def __init__(
        self,
        network_id: str,
        config: RedisConfig | str | None = None,
        *,
        worker_id: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        heartbeat_period: float | None = None,
        heartbeat_expire: float | None = None,
    ) -> None:
        super().__init__(network_id, config, prefix=prefix)
        self.heartbeat = heartbeat_settings(heartbeat_period, heartbeat_expire)
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.worker_id = validate_identifier(worker_id or new_worker_id(), "worker id")
        self._terminated = False
        self._wake = asyncio.Event()
        self._active_pops = 0
        self._blockers: dict[str, asyncio.Task[str | None]] = {}
        self._final_state = WorkerState.TERMINATED
        self._drain = False
        self._killed = asyncio.Event()
        # Attempt of every task this worker claimed and has not reported on yet:
        # outcomes are fenced by attempt, so a stale attempt's result is discarded.
        self._attempts: dict[str, int] = {}
        # How to interrupt each task that runs right now, and cancelled keys that
        # this worker claimed but has not started (skipped when their turn comes).
        self._interrupts: dict[str, Callable[[], object]] = {}
        self._cancelled: set[str] = set()
        # A claim whose reply was lost may have moved tasks to running on this
        # worker without it knowing: the next pop adopts them (see _adopt).
        self._claim_uncertain = False
        self._claims_in_flight = 0
        self._claim_gate = asyncio.Event()
        self._claim_gate.set()

    def _channels(self) -> list[str]:
        return [
            self.keys.events,
            self.keys.terminate_signal(self.worker_id),
            self.keys.terminate_all,
            self.keys.kill_signal(self.worker_id),
        ]

    def _on_event(self, channel: str, data: bytes) -> None:
        super()._on_event(channel, data)
        if channel == self.keys.events and data.startswith(b"C "):
            for raw in data[2:].split(b" "):
                self._cancel_local(raw.decode())
        elif channel == self.keys.kill_signal(self.worker_id):
            log.warning("kill requested through the network; stopping at once", worker_id=self.worker_id)
            self.mark_killed()
        elif channel == self.keys.terminate_all:
            self._drain = True
            self._wake.set()

    def _cancel_local(self, key: str) -> None:
        if key not in self._attempts:
            return
        self._cancelled.add(key)
        interrupt = self._interrupts.get(key)
        if interrupt is not None:
            log.info("task cancelled; interrupting it", key=key)
            interrupt()

    async def __aenter__(self) -> Worker:
        await super().__aenter__()
        await self.store.register_worker(
            self.worker_id,
            {
                "pid": os.getpid(),
                "hostname": socket.gethostname(),
                "started_at": dt.datetime.now(dt.UTC),
                "heartbeat": self.heartbeat is not None,
                **(
                    {"heartbeat_period": self.heartbeat[0], "heartbeat_expire": self.heartbeat[1]}
                    if self.heartbeat
                    else {}
                ),
            },
            heartbeat_expire=None if self.heartbeat is None else self.heartbeat[1],
        )
        if self.heartbeat is not None:
            self._heartbeat_task = asyncio.create_task(
                self._beat_forever(*self.heartbeat), name=f"rushpy-heartbeat-{self.worker_id}"
            )
        await self.store.publish_event()
        own, drain, kill = await self.store.stop_requests(self.worker_id)
        self._terminated = self._terminated or own
        self._drain = self._drain or drain
        if kill:
            self.mark_killed()
        log.debug("worker registered", network=self.network_id, worker_id=self.worker_id)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Cleanup must run even when the caller is being cancelled.
        with anyio_shield(10.0):
            if self._heartbeat_task is not None:
                self._heartbeat_task.cancel()
                with contextlib.suppress(BaseException):
                    await self._heartbeat_task
                self._heartbeat_task = None
            await self._stop_blockers()
            with contextlib.suppress(Exception):
                # Popped-but-unclaimed tasks go back to the queue. Tasks still running
                # here were interrupted (kill, crash of the loop): they are re-queued
                # while attempts remain, else failed, so none stays "running" forever.
                verb = "killed" if self._final_state is WorkerState.KILLED else "exited"
                settled = await self.store.requeue_worker_tasks(
                    self.worker_id,
                    Condition(
                        f"Worker{verb.capitalize()}",
                        f"worker {self.worker_id} {verb} while running the task",
                    ),
                )
                if settled.released:
                    log.info("returned popped tasks to the queue", n=settled.released)
                if settled.requeued or settled.failed:
                    log.warning(
                        "tasks interrupted by the exit",
                        requeued=len(settled.requeued),
                        failed=len(settled.failed),
                    )
            with contextlib.suppress(Exception):
                await self.store.set_worker_state(self.worker_id, self._final_state)
                await self.store.publish_event()
            await super().__aexit__(exc_type, exc, tb)

    async def _beat_forever(self, period: float, expire: float) -> None:
        """Refresh the heartbeat every ``period`` s on the event loop.

        Plain task functions run in threads, so a busy function never stops the
        beat. A beat that fails (connection trouble) is retried next period; a
        worker that is no longer running in the network stops beating and
        terminates.
        """
        while True:
            await asyncio.sleep(period)
            try:
                alive = await self.store.beat(self.worker_id, expire)
            except Exception as exc:  # keep beating through passing faults
                log.warning("heartbeat failed; retrying", error=str(exc))
                continue
            if not alive:
                log.warning("worker no longer counts as running; terminating")
                self.set_terminated()
                return

    # -- termination ------------------------------------------------------------------------
    @property
    def drain_requested(self) -> bool:
        """Whether the network asked every worker to exit once the queue is empty.

        Set by ``push_tasks(..., terminate_workers=True)``; :meth:`pop_tasks` then
        terminates the worker when it finds no task.
        """
        return self._drain

    @property
    def killed(self) -> bool:
        """Whether the worker was asked to stop at once (kill)."""
        return self._killed.is_set()

    async def wait_killed(self) -> None:
        """Return once the worker is asked to stop at once."""
        await self._killed.wait()

    @property
    def terminated(self) -> bool:
        """Whether the worker was asked to stop (by the controller, a signal, or itself)."""
        # A message on a terminate channel means the controller asked us to stop.
        if (
            not self._terminated
            and self._listener is not None
            and self._listener.counter(self.keys.terminate_signal(self.worker_id))
        ):
            self._terminated = True
        return self._terminated

    def set_terminated(self) -> None:
        """Ask this worker to stop: loops end after the tasks they are running.

        A :meth:`pop_task` that is waiting returns ``None`` at once.
        """
        self._terminated = True
        self._wake.set()

    def mark_killed(self) -> None:
        """Record the exit as a kill (state ``killed``) and stop at once.

        :func:`~rushpy.worker.runner.run_function` cancels the tasks in flight;
        on exit they go back to the queue (attempts left) or fail.
        """
        self._final_state = WorkerState.KILLED
        self._killed.set()
        self.set_terminated()

    # -- cancellation -----------------------------------------------------------------------
    def is_cancelled(self, key: str) -> bool:
        """Whether a task this worker claimed was cancelled (skip it or stop running it)."""
        return key in self._cancelled

    @contextlib.contextmanager
    def interruptible(self, key: str, interrupt: Callable[[], object]) -> Any:
        """Register how to interrupt task ``key`` while the block runs.

        A cancellation of the task (``Controller.cancel_tasks``) calls ``interrupt``
        once; if the task was cancelled before the block starts, it is called at once.
        """
        self._interrupts[key] = interrupt
        try:
            if key in self._cancelled:
                interrupt()
            yield
        finally:
            self._interrupts.pop(key, None)

    def forget(self, key: str) -> None:
        """Drop what the worker tracks about a task it will not report on."""
        self._attempts.pop(key, None)
        self._cancelled.discard(key)

    # -- popping ----------------------------------------------------------------------------
    async def pop_task(self, timeout: float | None = 0) -> PoppedTask | None:
        """Pop one task, waiting up to ``timeout`` seconds (``None``: until one comes).

        Returns:
            The task, already marked running on this worker, or ``None``.

        """
        tasks = await self.pop_tasks(1, timeout=timeout)
        return tasks[0] if tasks else None

    async def pop_tasks(self, n: int, timeout: float | None = 0) -> list[PoppedTask]:
        """Pop up to ``n`` tasks at once (one round trip when tasks are waiting).

        Waits up to ``timeout`` seconds for the first one; returns early (empty)
        when the worker is terminated.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise TaskError(f"invalid n={n!r}: pop at least 1 task")
        check_timeout(timeout, allow_none=True)
        self._active_pops += 1
        try:
            if self._claim_uncertain:
                adopted = await self._adopt()
                if adopted:
                    return adopted
            tasks = await self._pop_tasks(n, timeout)
        except WorkerNotRunningError as exc:
            # Declared lost (e.g. cut off from Redis for longer than the heartbeat
            # expiry) or stopped: its tasks may run elsewhere now, so stop.
            log.warning("worker no longer counts as running; terminating", reason=str(exc))
            self.set_terminated()
            if self._active_pops == 1:
                # The refused claim left its keys in the pending list: give them
                # back now, not only when the worker exits (it may live on).
                await self._stop_blockers()
                await self.store.release_pending(self.worker_id)
            return []
        finally:
            self._active_pops -= 1
        return tasks

    async def _claim(self, keys: Sequence[str]) -> list[PoppedTask]:
        """Claim pending keys and record their attempts (no await in between)."""
        await self._claim_gate.wait()
        self._claims_in_flight += 1
        try:
            tasks = await self.store.claim(self.worker_id, keys)
        except WorkerNotRunningError:
            raise
        except Exception:
            # The claim may have happened with its reply lost: check on the next pop.
            self._claim_uncertain = True
            raise
        finally:
            self._claims_in_flight -= 1
        for task in tasks:
            self._attempts[task.key] = task.attempt
        return tasks

    async def _adopt(self) -> list[PoppedTask]:
        """Take over tasks running on this worker in Redis that it does not know of.

        They come from a claim whose reply was lost (connection dropped). Claims
        are held back meanwhile, so a claim in flight is never adopted twice.
        """
        self._claim_gate.clear()
        try:
            while self._claims_in_flight:
                await asyncio.sleep(0.001)
            running, stale = await self.store.worker_running_keys(self.worker_id)
            for key in stale:
                self.forget(key)
            orphans = [k for k in running if k not in self._attempts]
            rows = await self.store.read_tasks(orphans)
            self._claim_uncertain = False
        finally:
            self._claim_gate.set()
        tasks = []
        for key, row in zip(orphans, rows, strict=True):
            if row is None:
                continue
            task = PoppedTask(
                key=key,
                xs=row.get("xs") or {},
                xs_extra=row.get("xs_extra"),
                attempt=int(row.get("attempts") or 1),
                timeout=row.get("timeout"),
                seed=row.get("seed"),
            )
            self._attempts[key] = task.attempt
            tasks.append(task)
        if tasks:
            log.warning("adopted tasks claimed before a lost reply", n=len(tasks))
        return tasks

    async def _pop_tasks(self, n: int, timeout: float | None) -> list[PoppedTask]:
        deadline = None if timeout is None else time.monotonic() + timeout
        events = self._events()
        term_channels = [self.keys.terminate_signal(self.worker_id), self.keys.terminate_all]
        moved: list[str] = []
        while True:
            seen = [events.counter(c) for c in term_channels]
            if moved:
                # A blocking move just handed us these keys: claim them directly
                # (one round trip) instead of running the pop script first. Keys
                # beyond n stay in the pending list for the next pop.
                tasks = await self._claim(moved[:n])
                moved = []
            else:
                tasks = await self._claim(await self.store.pop_keys(self.worker_id, n))
            if tasks:
                return tasks
            remaining = None if deadline is None else deadline - time.monotonic()
            if self._drain and not self._terminated:
                log.info("queue empty and workers asked to drain; terminating")
                self._terminated = True
            if self.terminated or (remaining is not None and remaining <= 0):
                if self._active_pops == 1:
                    # Nobody waits any more: stop the blocking moves so they take no
                    # task that another worker could run, and give back what they took.
                    # (Not while another pop of this worker runs: it may be about to
                    # claim keys from the pending list.)
                    await self._stop_blockers()
                    await self.store.release_pending(self.worker_id)
                return []
            moved = await self._wait_for_work(remaining, term_channels, seen)

    async def _stop_blockers(self) -> None:
        tasks = list(self._blockers.values())
        self._blockers.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    async def _wait_for_work(
        self, timeout: float | None, term_channels: list[str], seen: list[int]
    ) -> list[str]:
        """Block until a key lands in the pending list, a terminate request, or timeout.

        Returns the keys the blocking moves delivered (they are in the pending list).
        """
        for source in (self.keys.priority_queue(self.worker_id), self.keys.queued):
            task = self._blockers.get(source)
            if task is None or task.done():
                self._blockers[source] = asyncio.create_task(
                    self.store.block_move(source, self.worker_id, _BLOCK_SLICE)
                )
        terminate = asyncio.create_task(self._events().wait(term_channels, seen, None))
        woken = asyncio.create_task(self._wake.wait())
        try:
            done, _ = await asyncio.wait(
                [*self._blockers.values(), terminate, woken],
                timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for waiter in (terminate, woken):
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
        moved = []
        for source, task in list(self._blockers.items()):
            if task in done:
                del self._blockers[source]
                # Surface connection errors; a moved key is in the pending list.
                key = task.result()
                if key is not None:
                    moved.append(key)
        shared = self._blockers.pop(self.keys.queued, None)
        if shared is not None and moved:
            # Work arrived on the priority queue: stop waiting on the shared queue, or
            # it would take a task while this worker is busy. (The priority wait may
            # stay armed: only this worker pops from its priority queue.) A key it
            # moved meanwhile is in the pending list and is claimed by the next pop.
            shared.cancel()
            with contextlib.suppress(BaseException):
                await shared
        elif shared is not None:
            self._blockers[self.keys.queued] = shared
        return moved

    # -- writing ----------------------------------------------------------------------------
    async def push_running_tasks(
        self,
        xss: Sequence[Mapping[str, Any]],
        xss_extra: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[str]:
        """Create tasks that this worker runs itself (decentralized mode); returns keys."""
        xss = check_mappings(xss, "xss")
        extras = check_same_length(xss, xss_extra, "xss_extra")
        tasks = [{"xs": xs, "xs_extra": extra} for xs, extra in zip(xss, extras, strict=True)]
        keys = await self.store.create_running(self.worker_id, tasks)
        for key in keys:
            self._attempts[key] = 1
        return keys

    async def finish_tasks(
        self,
        keys: Sequence[str],
        yss: Sequence[Mapping[str, Any]],
        yss_extra: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[bool]:
        """Record results of running tasks.

        Returns:
            Per key whether the result was recorded; ``False`` when this worker no
            longer runs that attempt of the task (it was cancelled, re-queued after
            the worker was declared lost, or recorded already): first writer wins.

        """
        keys = check_keys(keys)
        yss = check_mappings(yss, "yss")
        check_same_length(keys, yss, "yss")
        extras = check_same_length(keys, yss_extra, "yss_extra")
        items = [
            (k, self._attempts.get(k), {"ys": ys, "ys_extra": extra})
            for k, ys, extra in zip(keys, yss, extras, strict=True)
        ]
        return self._reported(keys, await self.store.complete(self.worker_id, "finished", items))

    def _reported(self, keys: Sequence[str], codes: list[int]) -> list[bool]:
        for key in keys:
            self.forget(key)
        return [code != 0 for code in codes]

    async def fail_tasks(
        self,
        keys: Sequence[str],
        conditions: Sequence[Condition | BaseException | Mapping[str, Any] | str],
    ) -> list[bool]:
        """Record failures of running tasks; a condition may be an exception or a message.

        A task with attempts left (``max_retries``) goes back to the queue instead
        of failing; its condition joins the task's ``conditions`` history either way.

        Returns:
            Per key whether the failure was taken (recorded or re-queued); ``False``
            as for :meth:`finish_tasks`.

        """
        keys = check_keys(keys)
        check_same_length(keys, conditions, "conditions")
        try:
            items = [
                (k, self._attempts.get(k), {"condition": Condition.coerce(c).to_dict()})
                for k, c in zip(keys, conditions, strict=True)
            ]
        except TypeError as exc:
            raise TaskError(str(exc)) from None
        return self._reported(keys, await self.store.complete(self.worker_id, "failed", items))


@contextlib.contextmanager
def anyio_shield(deadline: float) -> Any:
    """Shield cleanup from cancellation, bounded by ``deadline`` seconds."""
    with anyio.CancelScope(shield=True) as scope:
        scope.deadline = anyio.current_time() + deadline
        yield scope
