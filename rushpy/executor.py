"""``rushpy.Executor``: a :class:`concurrent.futures.Executor` over a rushpy network.

Code written for ``ProcessPoolExecutor`` runs on rushpy workers by changing
the line that makes the executor::

    with rushpy.Executor(n_workers=2, config=config) as ex:   # was ProcessPoolExecutor(2)
        squares = list(ex.map(pow, range(20), repeat(2)))

Each ``submit`` (or each chunk of ``map``) is one task run by
:func:`rushpy.trampoline.run` on a worker. The executor's blocking controller
(:mod:`rushpy.blocking`) pushes the tasks and one background task on its loop
reads the result stream (``fetch_new_tasks(states=("finished", "failed"))``)
and resolves the futures as rows arrive. A failed task re-raises its exception
in the caller: a builtin exception type is re-created, any other becomes a
:class:`~rushpy.errors.RemoteError`; either way its ``__cause__`` is a
:class:`RemoteTraceback` holding the worker's traceback (as
``ProcessPoolExecutor`` does). If that stream fails for good (the server
unreachable past ``reconnect_budget``), every open future fails with an
:class:`~rushpy.errors.ExecutorShutdownError` instead of waiting forever.

Callables are sent by import path (signed, see :mod:`rushpy.pickling`);
lambdas, closures and functions of a notebook need ``pickle=True`` (and workers
that opted in: local workers started here do). See ``docs/executor.md``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from typing import Any

import anyio
import anyio.to_thread

from rushpy.blocking import Controller as BlockingController
from rushpy.config import RedisConfig
from rushpy.errors import ExecutorShutdownError, WorkerFunctionError
from rushpy.functions import function_path
from rushpy.pickling import dumps, loads, mac
from rushpy.progress import TaskProgress, progress_enabled
from rushpy.remote import RemoteTraceback, remote_exception
from rushpy.signing import signing_key
from rushpy.trampoline import TRAMPOLINE

__all__ = ["Executor", "RemoteTraceback"]

_STATES = ("finished", "failed")


class _Future(cf.Future[Any]):
    """A future of one task: ``cancel()`` also cancels the task in the network."""

    def __init__(self, executor: Executor, single: bool) -> None:
        super().__init__()
        self._executor = executor
        self._single = single  # a submit (one result) or a map chunk (a list of results)
        self.key: str | None = None

    def cancel(self) -> bool:
        """Cancel the task unless it already finished or failed; ``True`` when cancelled."""
        if self.done():
            return self.cancelled()
        if self.key is None or not self._executor._cancel_task(self.key):
            return False
        # The task is cancelled and this future left the executor's table: nothing
        # else resolves it. Notify now, as a pool does when it dequeues a cancelled
        # call, or cf.wait() and as_completed() would wait for it forever.
        super().cancel()
        self.set_running_or_notify_cancel()
        return True


PROGRESS_EVERY = 0.5
"""Seconds between redraws of :meth:`Executor.map`'s progress bar."""


class Executor(cf.Executor):
    """A :class:`concurrent.futures.Executor` whose calls run on the workers of a rushpy network.

    Args:
        network_id: Network to use; default a new one (reset on shutdown).
        n_workers: Local worker processes to start (0: use workers already
            running in the network, started with ``--fun rushpy.trampoline:run``).
        config: Server settings or URL (default :meth:`RedisConfig.from_env`).
        pickle: Send callables that cannot be imported by name (lambdas, closures,
            notebook functions) and their arguments as signed cloudpickles; the
            workers must opt in (local workers started here do).
        max_retries: Retries of a task whose worker is lost.
        controller_options: Keyword options of :class:`rushpy.Controller`.
        **worker_options: Options of ``start_local_workers`` (``concurrency``,
            ``heartbeat_period``, ...).

    """

    def __init__(
        self,
        network_id: str | None = None,
        n_workers: int = 0,
        config: RedisConfig | str | None = None,
        *,
        pickle: bool = False,
        max_retries: int | None = None,
        controller_options: Mapping[str, Any] | None = None,
        **worker_options: Any,
    ) -> None:
        self._own_network = network_id is None
        self.pickle = pickle
        self.max_retries = max_retries
        self._futures: dict[str, _Future] = {}
        self._shutdown = False
        self._shutdown_lock = threading.Lock()
        self._broken: Exception | None = None  # why the result stream stopped, if it did
        self._rush = BlockingController(
            network_id or f"executor-{uuid.uuid4().hex[:12]}", config, **(controller_options or {})
        )
        try:
            self._lock = self._rush._portal.call(anyio.Lock)
            if n_workers:
                self._rush.start_local_workers(
                    n_workers, fun=TRAMPOLINE, allow_pickle=pickle, **worker_options
                )
            self._consumer = self._rush._portal.start_task_soon(self._consume)
        except BaseException:
            self._rush.close()
            raise

    @property
    def controller(self) -> BlockingController:
        """The blocking controller of the executor's network (to read tasks, logs, workers)."""
        return self._rush

    @property
    def network_id(self) -> str:
        """Id of the executor's network."""
        return str(self._rush.network_id)

    # -- the result stream (runs on the portal's loop) -------------------------------------------
    async def _consume(self) -> None:
        try:
            await self._read_results()
        except Exception as exc:  # not cancellation: shutdown() cancels this task
            await self._break(exc)

    async def _break(self, exc: Exception) -> None:
        """Fail every open future (and later submits) after the result stream failed for good.

        The client below already retried with backoff for the config's
        ``reconnect_budget``; without this, open futures would wait forever.
        """
        async with self._lock:  # no push registers a future while we fail them
            self._broken = exc
            futures = list(self._futures.values())
            self._futures.clear()
            for future in futures:  # never cancelled: cancel() removes a future under this lock
                future.set_running_or_notify_cancel()
                future.set_exception(self._broken_error())

    def _broken_error(self) -> ExecutorShutdownError:
        cause = self._broken
        error = ExecutorShutdownError(
            f"the Executor lost its result stream ({type(cause).__name__}: {cause}); the outcome of its "
            "open calls is unknown and it takes no more: make a new Executor once the server is reachable"
        )
        error.__cause__ = cause
        return error

    async def _read_results(self) -> None:
        rush = self._rush._target
        while True:
            await rush.wait_for_new_tasks(None, states=_STATES)
            # Under the lock: a row is never read before its future is registered.
            async with self._lock:
                rows = await rush.fetch_new_tasks(0, states=_STATES)
                for row in rows:
                    future = self._futures.pop(row["key"], None)
                    if future is not None:
                        self._resolve(future, row)

    def _resolve(self, future: _Future, row: Mapping[str, Any]) -> None:
        if future.done():  # cancelled here before its failure arrived
            return
        if not future.set_running_or_notify_cancel():
            return
        try:
            if row["state"] == "failed":
                raise remote_exception(row["key"], row.get("condition") or {})
            if "result_pickle" in row:
                results = loads(row["result_pickle"], row.get("result_mac"), signing_key(), "result")
            else:
                results = row["results"]
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(results[0] if future._single else results)

    async def _push(self, xss: list[dict[str, Any]], futures: list[_Future]) -> None:
        async with self._lock:
            if self._broken is not None:
                raise self._broken_error()
            keys = await self._rush._target.push_tasks(xss, max_retries=self.max_retries)
            for key, future in zip(keys, futures, strict=True):
                future.key = key
                self._futures[key] = future

    def _cancel_task(self, key: str) -> bool:
        return bool(self._rush._portal.call(self._cancel, key))

    async def _cancel(self, key: str) -> bool:
        # Under the lock: the consumer cannot resolve the future between the
        # cancellation and its removal (it would fail with "Cancelled" instead).
        async with self._lock:
            if key not in await self._rush._target.cancel_tasks([key]):
                return False  # finished or failed already: its row resolves the future
            del self._futures[key]
            return True

    # -- building tasks --------------------------------------------------------------------------
    def _payloads(self, fn: Callable[..., Any], chunks: list[list[Any]]) -> list[dict[str, Any]]:
        key = signing_key()
        if self.pickle:
            out = []
            for calls in chunks:
                data, signature = dumps((fn, calls), key, "call")
                out.append({"pickle": data, "mac": signature})
            return out
        try:
            path = function_path(fn)
        except WorkerFunctionError as exc:
            raise WorkerFunctionError(
                f"{exc}; or send it pickled: rushpy.Executor(..., pickle=True), with workers that "
                "accept pickles (--allow-pickle; see docs/executor.md)"
            ) from None
        signature = mac(key, path.encode(), "function")
        return [{"fn": path, "mac": signature, "calls": calls} for calls in chunks]

    def _submit_chunks(
        self, fn: Callable[..., Any], chunks: list[list[Any]], single: bool, order: list[int]
    ) -> list[_Future]:
        with self._shutdown_lock:
            if self._shutdown:
                raise ExecutorShutdownError("cannot submit to an Executor after shutdown(): make a new one")
            payloads = self._payloads(fn, chunks)
            futures = [_Future(self, single) for _ in chunks]
            # Pushed in ``order`` (the queue's processing order), returned in input order.
            self._rush._portal.call(self._push, [payloads[i] for i in order], [futures[i] for i in order])
        return futures

    # -- concurrent.futures.Executor -------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Run ``fn(*args, **kwargs)`` as one task; returns its future.

        Raises:
            WorkerFunctionError: ``fn`` cannot be imported by name and ``pickle`` is off.
            TaskError: an argument cannot be stored (not msgpack; use ``pickle=True``).
            ConfigError: ``pickle`` is on and cloudpickle is not installed.
            ExecutorShutdownError: the executor was shut down, or lost its result
                stream (the server was unreachable past ``reconnect_budget``).

        """
        return self._submit_chunks(fn, [[[list(args), kwargs]]], True, [0])[0]

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        shuffle: bool = False,
        progress: bool | None = None,
    ) -> Iterator[Any]:
        """``fn`` over the zipped ``iterables``, results in input order (like :func:`map`).

        Every call is pushed at once; the iterator waits for each result in turn.

        Args:
            fn: The callable.
            *iterables: Its positional arguments, one iterable per parameter.
            timeout: Seconds from this call until every result must have arrived
                (``TimeoutError`` otherwise).
            chunksize: Calls per task (fewer, larger tasks for cheap calls).
            shuffle: Push the chunks in random order (load balance when call cost
                grows with the input); results keep input order.
            progress: Draw a progress bar of the tasks (chunks) per state while
                the results are read: ``None`` (default) only when standard error
                is a terminal and rich is installed, ``True`` always, ``False`` never.

        Raises:
            ConfigError: ``chunksize`` is below 1, or ``progress=True`` without rich.

        """
        if chunksize < 1:
            from rushpy.errors import ConfigError  # noqa: PLC0415 - error path only

            raise ConfigError(f"invalid chunksize={chunksize!r}: use 1 or more calls per task")
        deadline = None if timeout is None else time.monotonic() + timeout
        calls = iter([list(args), {}] for args in zip(*iterables, strict=False))
        chunks = [c for c in iter(lambda: list(islice(calls, chunksize)), [])]
        order = list(range(len(chunks)))
        if shuffle:
            random.shuffle(order)
        bar = TaskProgress(description="map", total=len(chunks)) if progress_enabled(progress) else None
        futures = self._submit_chunks(fn, chunks, False, order)
        return self._results(futures, deadline, bar)

    def _results(
        self, futures: list[_Future], deadline: float | None, bar: TaskProgress | None
    ) -> Iterator[Any]:
        try:
            for future in futures:
                if bar is not None:
                    self._wait_drawing(future, futures, deadline, bar)
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                yield from future.result(left)
        finally:
            for future in futures:  # stopped early (an error, a timeout, a break): drop the rest
                future.cancel()
            if bar is not None:
                bar.close()

    def _wait_drawing(
        self, future: _Future, futures: list[_Future], deadline: float | None, bar: TaskProgress
    ) -> None:
        """Wait for ``future``, redrawing ``bar`` every :data:`PROGRESS_EVERY` seconds.

        Done futures are counted here; the open ones' states (queued or running)
        are looked up by key, one read of those keys per redraw.
        """
        while True:
            done = [f for f in futures if f.done()]
            failed = sum(1 for f in done if f.cancelled() or f.exception() is not None)
            open_keys = [f.key for f in futures if not f.done() and f.key is not None]
            running = 0
            if open_keys:
                with contextlib.suppress(Exception):  # a bar never breaks the map
                    rows = self._rush.fetch_tasks(keys=open_keys)
                    running = sum(1 for row in rows if row.get("state") == "running")
            bar.update(
                finished=len(done) - failed,
                failed=failed,
                running=running,
                queued=len(futures) - len(done) - running,
            )
            left = None if deadline is None else deadline - time.monotonic()
            if future.done() or (left is not None and left <= 0):
                return
            cf.wait([future], timeout=PROGRESS_EVERY if left is None else min(left, PROGRESS_EVERY))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work, optionally cancel queued calls, wait, and close the controller.

        Local workers started here are stopped; a network made here is reset
        (unless the result stream was lost: the server is then likely gone).
        Calls still open at the end fail with :class:`ExecutorShutdownError`.

        Args:
            wait: Wait for the pending futures first.
            cancel_futures: Cancel every call not finished yet.

        """
        with self._shutdown_lock:
            if self._shutdown:
                return
            self._shutdown = True
        pending = list(self._futures.values())
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait:
            cf.wait(pending)
        self._consumer.cancel()
        try:
            # After a lost stream the server is likely gone: every caller has its error already.
            if self._own_network and self._broken is None:
                self._rush.reset(workers=True)
        finally:
            self._rush.close()
        for future in pending:
            if not future.done():
                future.set_exception(
                    ExecutorShutdownError("the Executor was shut down before this call ended")
                )

    # -- asyncio flavour -------------------------------------------------------------------------
    async def submit_async(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Await ``fn(*args, **kwargs)`` run as one task (from any asyncio code)."""
        future = await anyio.to_thread.run_sync(lambda: self.submit(fn, *args, **kwargs))
        return await asyncio.wrap_future(future)

    async def map_async(
        self, fn: Callable[..., Any], *iterables: Iterable[Any], chunksize: int = 1, shuffle: bool = False
    ) -> list[Any]:
        """Await the list of ``fn`` over the zipped ``iterables``, in input order (see :meth:`map`)."""
        results = await anyio.to_thread.run_sync(
            lambda: self.map(fn, *iterables, chunksize=chunksize, shuffle=shuffle)
        )
        return await anyio.to_thread.run_sync(list, results)
