"""The blocking API: a :class:`Controller` and a :class:`Worker` for code without ``async``.

Scripts, notebooks and plain-``def`` worker loops call the async core through
one thin layer: every public method of :class:`rushpy.Controller` (and
:class:`rushpy.Worker`) is forwarded by name to the async object, which lives
on an event loop in a thread of its own (an anyio blocking portal). Nothing is
implemented twice: a blocking method is the async method run on that loop, with
the same signature and docstring; async iterators (``as_completed``) become
plain iterators.

Because the loop runs in its own thread, calls work the same from a script,
from a notebook cell (whose own loop is already running) and from several
threads at once; nothing is ever "attached to a different loop".

Example:
    >>> with rushpy.blocking.Controller("hpo", config=config) as rush:
    ...     rush.start_local_workers(2, fun=objective)
    ...     keys = rush.push_tasks([{"x": 1}, {"x": 2}])
    ...     table = rush.wait_for_tasks(keys, timeout=30)

A plain-``def`` worker loop gets a blocking :class:`Worker` through
:func:`worker_loop`, which turns it into the ``async def`` loop that
``start_local_workers(worker_loop=...)`` and ``--worker-loop`` expect.

"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import ExitStack
from types import TracebackType
from typing import Any, ClassVar

import anyio.to_thread
from anyio.from_thread import BlockingPortal, start_blocking_portal

from rushpy.controller import Controller as AsyncController
from rushpy.worker import Worker as AsyncWorker

__all__ = ["Controller", "Worker", "worker_loop"]


class _Blocking:
    """An async rushpy object driven from other threads through a blocking portal.

    Subclasses name the async class in ``_async_class``; :func:`_forward_all`
    gives them a blocking twin of each of its public methods and properties.
    """

    _async_class: ClassVar[type[Any]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._stack = ExitStack()
        try:
            self._portal: BlockingPortal = self._stack.enter_context(start_blocking_portal("asyncio"))
            # Built on the portal's loop: the async object's anyio state belongs to that loop.
            target = self._portal.call(lambda: self._async_class(*args, **kwargs))
            self._target: Any = self._stack.enter_context(self._portal.wrap_async_context_manager(target))
        except BaseException:
            self._stack.close()
            raise

    @classmethod
    def _attach(cls, target: Any, portal: BlockingPortal) -> Any:
        """A blocking view of an entered async object on ``portal``'s loop (owned by the caller)."""
        view = cls.__new__(cls)
        view._stack = ExitStack()
        view._portal = portal
        view._target = target
        return view

    def close(self) -> None:
        """Leave the async object (as ``async with`` would) and stop the portal's loop.

        Idempotent. A view made for a worker loop (:func:`worker_loop`) owns
        nothing and closing it does nothing.
        """
        self._stack.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        # Public instance attributes of the async object (worker_id, heartbeat, ...).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._target, name)

    def __repr__(self) -> str:
        return f"blocking.{type(self).__name__}({self._target!r})"


def _iterate(portal: BlockingPortal, rows: AsyncGenerator[Any, None]) -> Iterator[Any]:
    """A plain iterator over an async generator living on ``portal``'s loop."""
    try:
        while True:
            try:
                yield portal.call(rows.__anext__)
            except StopAsyncIteration:
                return
    finally:
        # Leaving early (break, an exception, garbage collection) closes the async
        # generator on its own loop, so its cleanup runs there.
        # RuntimeError: the portal was closed first; its loop already cancelled the generator.
        with contextlib.suppress(RuntimeError):
            portal.call(rows.aclose)


def _forward(name: str, member: Any) -> Any:
    """The blocking twin of the async class's attribute ``member`` named ``name``."""
    if isinstance(member, property):

        def get(self: _Blocking) -> Any:
            return self._portal.call(getattr, self._target, name)

        return property(get, doc=member.__doc__)
    if inspect.isasyncgenfunction(member):

        @functools.wraps(member)
        def iterate(self: _Blocking, *args: Any, **kwargs: Any) -> Iterator[Any]:
            rows = self._portal.call(functools.partial(getattr(self._target, name), *args, **kwargs))
            return _iterate(self._portal, rows)

        return iterate

    @functools.wraps(member)
    def call(self: _Blocking, *args: Any, **kwargs: Any) -> Any:
        # Coroutine functions are awaited on the portal's loop; plain methods run
        # there too, so they never race with the loop's own use of the object.
        return self._portal.call(functools.partial(getattr(self._target, name), *args, **kwargs))

    return call


def _forward_all(cls: type[_Blocking]) -> type[_Blocking]:
    """Give ``cls`` a blocking twin of every public method and property of its async class."""
    for name in dir(cls._async_class):
        if name.startswith("_") or name in cls.__dict__:
            continue
        member = inspect.getattr_static(cls._async_class, name)
        if isinstance(member, (staticmethod, classmethod)):
            continue
        if isinstance(member, property) or inspect.isfunction(member):
            setattr(cls, name, _forward(name, member))
    return cls


@_forward_all
class Controller(_Blocking):
    """:class:`rushpy.Controller` for code without ``async``: the same methods, blocking.

    Construction connects (as ``async with`` would); leave with ``with`` or
    :meth:`close`. Safe to call from several threads at once. See the module
    docstring for an example.

    Args:
        *args: Arguments of :class:`rushpy.Controller` (``network_id``, ``config``).
        **kwargs: Its keyword options.

    """

    _async_class = AsyncController

    def __enter__(self) -> Controller:
        return self


@_forward_all
class Worker(_Blocking):
    """:class:`rushpy.Worker` for code without ``async``: the same methods, blocking.

    Standalone (``blocking.Worker(network_id, config=...)``) it registers on
    construction and leaves on :meth:`close`; inside a plain-``def`` worker
    loop (:func:`worker_loop`) it is a view of the worker process's own worker.

    Args:
        *args: Arguments of :class:`rushpy.Worker` (``network_id``, ``config``).
        **kwargs: Its keyword options.

    """

    _async_class = AsyncWorker

    def __enter__(self) -> Worker:
        return self


def worker_loop(fun: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a plain-``def`` worker loop into the ``async def`` loop workers run.

    ``fun(worker, **loop_args)`` runs in a thread and gets a blocking
    :class:`Worker` (``worker.pop_task()``, ``worker.finish_tasks(...)``,
    ``worker.terminated``, every read method); its calls run on the worker's own
    event loop, so heartbeats go on while it computes. Decorate the loop where
    it is defined and name it as usual (``--worker-loop mypkg.loops:my_loop``).

    Example:
        >>> @rushpy.blocking.worker_loop
        ... def my_loop(worker, n=10):
        ...     keys = worker.push_running_tasks([{"x": i} for i in range(n)])
        ...     worker.finish_tasks(keys, [{"y": i} for i in range(n)])

    Args:
        fun: ``def loop(worker: rushpy.blocking.Worker, **loop_args)``.

    Returns:
        ``async def loop(worker: rushpy.Worker, **loop_args)``, for
        :func:`rushpy.run_worker_loop`.

    """

    @functools.wraps(fun)
    async def loop(worker: AsyncWorker, **loop_args: Any) -> Any:
        async with BlockingPortal() as portal:
            view = Worker._attach(worker, portal)
            # A kill cancels the loop: the thread is abandoned (its next call
            # finds the portal stopped) and the worker exits without waiting for it.
            return await anyio.to_thread.run_sync(
                functools.partial(fun, view, **loop_args), abandon_on_cancel=True
            )

    return loop
