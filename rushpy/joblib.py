"""A joblib backend: ``joblib.Parallel`` (and scikit-learn's ``n_jobs``) on rushpy workers.

Importing this module registers the backend ``"rushpy"``; code written for
joblib then runs on a rushpy network by changing one line::

    import joblib
    import rushpy.joblib  # registers "rushpy"

    with joblib.parallel_backend("rushpy", n_workers=4, config=config):  # was "loky"
        results = joblib.Parallel(n_jobs=4)(joblib.delayed(f)(x) for x in xs)
        search = GridSearchCV(SVC(), grid, n_jobs=4).fit(X, y)

It is a front-end over :class:`rushpy.Executor`, not a second implementation:
each batch that joblib dispatches is one task, submitted with
``Executor(pickle=True)``. joblib's batches are objects holding the user's
functions and arguments (often closures and estimators), so they travel as
cloudpickles signed with the Executor's key (:mod:`rushpy.pickling`), and
only workers whose operator accepts pickles run them: local workers the
backend starts do. Exceptions travel back pickled too, so the caller gets the
original exception type (as with loky), its ``__cause__`` holding the
worker's traceback.

Workers: with ``n_workers`` > 0 every ``Parallel`` call starts that many local
workers (and stops them at its end); with ``n_workers=0`` it joins workers
already running in ``network_id`` (started with ``--fun rushpy.trampoline:run
--allow-pickle`` and the same ``RUSHPY_SIGNING_KEY``); ``executor=`` reuses
an :class:`~rushpy.Executor` you own across many calls. See ``docs/joblib.md``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import importlib
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import joblib
from joblib._parallel_backends import AutoBatchingMixin, FallbackToBackend, SequentialBackend
from joblib.parallel import ParallelBackendBase

from rushpy.config import RedisConfig
from rushpy.errors import ConfigError
from rushpy.executor import Executor, RemoteTraceback

__all__ = ["BACKEND", "RushpyBackend", "register", "run_batch"]

BACKEND = "rushpy"
"""The name the backend is registered under."""


class _Failure:
    """An exception raised by a batch, with the worker's traceback as text (both pickle)."""

    def __init__(self, exc: BaseException, tb: str) -> None:
        self.exc = exc
        self.tb = tb


def _picklable(exc: BaseException) -> BaseException:
    """``exc`` if cloudpickle can carry it, else a ``RuntimeError`` naming it."""
    # Present wherever pickled batches run; imported by name, as it ships no type hints.
    cloudpickle: Any = importlib.import_module("cloudpickle")
    try:
        cloudpickle.dumps(exc)
    except Exception:  # any pickling failure: keep type and message as text
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def run_batch(batch: Callable[[], Any]) -> Any:
    """Run one joblib batch on a worker; its results, or its exception wrapped to travel back.

    The exception is returned rather than raised so that the caller re-raises
    it with its own type (a failed task would only carry type and message).
    """
    try:
        return batch()
    except Exception as exc:  # every failure of user code goes back to joblib
        tb = "".join(traceback.format_exception(exc))
        exc.__traceback__ = None  # tracebacks do not pickle
        return _Failure(_picklable(exc), tb)


def _relay(callbacks: cf.ThreadPoolExecutor, callback: Callable[[Any], Any], future: cf.Future[Any]) -> None:
    """Hand a done future to joblib's callback in the backend's callback thread."""
    with contextlib.suppress(RuntimeError):  # the call already ended (terminate): nobody waits for it
        callbacks.submit(callback, future)


class RushpyBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]  # joblib is untyped
    """joblib's ``ParallelBackendBase`` on a rushpy network, through :class:`rushpy.Executor`.

    Args:
        network_id: Network to run on; default a new one per ``Parallel`` call.
        n_workers: Local workers each ``Parallel`` call starts (0: join the
            workers already running in ``network_id``).
        config: Server settings or URL (default :meth:`RedisConfig.from_env`).
        executor: An :class:`~rushpy.Executor` (made with ``pickle=True``) to
            use instead; it is neither started nor shut down here.
        nesting_level: Set by joblib.
        inner_max_num_threads: Set by joblib (not supported).
        **executor_options: Further options of :class:`rushpy.Executor`
            (``max_retries``, ``controller_options``, worker options such as
            ``concurrency``).

    """

    supports_retrieve_callback = True
    supports_sharedmem = False
    uses_threads = False
    default_n_jobs = -1

    def __init__(
        self,
        network_id: str | None = None,
        n_workers: int = 0,
        config: RedisConfig | str | None = None,
        *,
        executor: Executor | None = None,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        **executor_options: Any,
    ) -> None:
        if not isinstance(n_workers, int) or isinstance(n_workers, bool) or n_workers < 0:
            raise ConfigError(
                f"invalid n_workers={n_workers!r}: use an integer >= 0 (0: join running workers)"
            )
        if executor is not None and not executor.pickle:
            raise ConfigError(
                "the joblib backend sends batches pickled: pass an Executor made with pickle=True"
            )
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        self.network_id = network_id
        self.n_workers = n_workers
        self.config = config
        self.executor_options: Mapping[str, Any] = executor_options
        self._given = executor
        self._executor: Executor | None = executor
        self._pending: set[cf.Future[Any]] = set()
        self._lock = threading.Lock()
        # Futures resolve on the Executor's event-loop thread, which must not block;
        # joblib's callback submits the next batch (a blocking call), so it runs here.
        self._callbacks: cf.ThreadPoolExecutor | None = None

    # -- sizing ---------------------------------------------------------------------------------
    def _available(self) -> int:
        """Workers a call can use: the ones it starts, else those running in the network now."""
        if self.n_workers or self._executor is None:
            return self.n_workers
        return int(self._executor.controller.n_running_workers())

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """Batches in flight at once: ``n_jobs`` (> 0), or counted from the workers (< 0: -1 = all).

        A negative ``n_jobs`` never gives fewer than 2: joblib runs one job in
        its own process, and work sent to this backend belongs on the network
        (also while the workers it joins are still starting). Only an explicit
        ``n_jobs=1`` runs in-process, as with every joblib backend.

        Raises:
            ValueError: ``n_jobs == 0`` (joblib's convention).

        """
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            n_jobs = self.default_n_jobs
        if n_jobs < 0:
            return max(self._available() + 1 + n_jobs, 2)
        return n_jobs

    # -- one Parallel call ----------------------------------------------------------------------
    def configure(
        self,
        n_jobs: int | None = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        **backend_kwargs: Any,
    ) -> int:
        """Start (or join) the executor of this ``Parallel`` call; returns the jobs in flight.

        One job falls back to joblib's sequential backend (in this process), as
        loky does, without starting workers. joblib's own options in
        ``backend_kwargs`` (memmapping, verbosity, ``prefer``) do not apply to
        tasks in a network and are ignored.
        """
        self.parallel = parallel
        if self.effective_n_jobs(n_jobs) == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        if self._executor is None:
            self._executor = Executor(
                self.network_id,
                self.n_workers,
                self.config,
                pickle=True,
                **self.executor_options,
            )
        if self._callbacks is None:
            self._callbacks = cf.ThreadPoolExecutor(1, thread_name_prefix="rushpy-joblib")
        return self.effective_n_jobs(n_jobs)

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], Any] | None = None) -> cf.Future[Any]:
        """Run one batch as one task; ``callback`` gets the future once it is done (in another thread)."""
        assert self._executor is not None and self._callbacks is not None, "configure() comes first"
        future = self._executor.submit(run_batch, func)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)
        if callback is not None:
            future.add_done_callback(functools.partial(_relay, self._callbacks, callback))
        return future

    def _forget(self, future: cf.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)

    def retrieve_result_callback(self, out: cf.Future[Any]) -> Any:
        """The batch's results; re-raises its exception with the worker's traceback as ``__cause__``."""
        result = out.result()
        if isinstance(result, _Failure):
            result.exc.__cause__ = RemoteTraceback(result.tb)
            raise result.exc
        return result

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Cancel every batch not finished yet (a batch failed; joblib drops the rest)."""
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            future.cancel()

    def terminate(self) -> None:
        """End of a ``Parallel`` call: stop the executor (and its workers) unless it was given."""
        executor, self._executor = self._executor, self._given
        callbacks, self._callbacks = self._callbacks, None
        if executor is not None and executor is not self._given:
            executor.shutdown(wait=False, cancel_futures=True)
        if callbacks is not None:
            callbacks.shutdown(wait=False)
        self.reset_batch_stats()


def register() -> None:
    """Register the backend with joblib as ``"rushpy"`` (done on import of this module)."""
    joblib.register_parallel_backend(BACKEND, RushpyBackend)


register()
