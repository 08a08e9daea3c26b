"""What a call of the user function gets beside the task's inputs: constants, large objects, seeds.

:class:`TaskInputs` is a component of the :class:`~rushpy.worker.Worker`. Before
a batch runs, :meth:`TaskInputs.prepare` builds each task's keyword arguments:

- the network's **constants** (:mod:`rushpy.store.objects`), cached: each
  claim reads their version in the same step (``claim.lua``), and the worker
  reads the constants themselves only when it moved
  (``push_tasks(..., constants=...)`` moves it before its tasks exist, so no
  task runs with older constants than its push set). Tasks whose claim did
  not say (adopted after a lost reply) cost one round trip to read the version;
- the task's inputs, with each :class:`~rushpy.codec.ObjectRef` replaced by
  the large object's value, fetched once per worker (all missing ones of a
  batch in one round trip), checked against its SHA-256 and kept in a cache
  bounded by :data:`OBJECT_CACHE_BYTES`.

Constants and cached objects are the same Python objects for every call on a
worker: functions must not change them in place.

A task that cannot get its arguments fails alone, for good: a missing or
damaged large object or constant with a ``CorruptTask`` condition naming it,
an input with the name of a constant with a ``TaskError`` condition.

It also holds the worker's own random stream (:attr:`rushpy.Worker.seed`),
derived from the network's root seed and the worker id (:mod:`rushpy.seeds`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from rushpy.codec import ObjectRef, decode
from rushpy.errors import ServerError
from rushpy.fields import CORRUPT
from rushpy.models import Condition, PoppedTask
from rushpy.seeds import make_rng, worker_seed
from rushpy.store import Store
from rushpy.store.objects import load_object
from rushpy.worker.backoff import retrying
from rushpy.worker.tracking import UNKNOWN_VERSION, TaskTracker

__all__ = ["OBJECT_CACHE_BYTES", "Prepared", "TaskInputs"]

OBJECT_CACHE_BYTES = 256 * 1024 * 1024
"""Encoded bytes of large objects a worker keeps decoded (least recently used go first)."""

Prepared = tuple[list[tuple[PoppedTask, dict[str, Any]]], list[tuple[PoppedTask, Condition]]]
"""``(tasks with their keyword arguments, tasks that cannot run with their condition)``."""


class TaskInputs:
    """Constants, large objects and the worker's random stream, for one worker.

    Args:
        store: The worker's store.
        worker_id: The worker's id (for its own seed).
        cache_bytes: Bound of the large-object cache (encoded bytes).
        tracker: The worker's task tracker, which knows the constants version
            each task was claimed with (without it, every batch reads the version).

    """

    def __init__(
        self,
        store: Store,
        worker_id: str,
        cache_bytes: int = OBJECT_CACHE_BYTES,
        tracker: TaskTracker | None = None,
    ) -> None:
        self._store = store
        self._tracker = tracker
        self._worker_id = worker_id
        self._cache_bytes = cache_bytes
        self._version: bytes | None = None
        self._loaded = False
        self._constants: dict[str, Any] = {}
        self._constants_error: str | None = None
        self._objects: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._cached = 0
        self.root_seed: int | None = None
        self._rng: Any = None

    # -- the worker's own stream ----------------------------------------------------------
    async def load_root_seed(self) -> None:
        """Read the network's root seed (once, when the worker starts)."""
        self.root_seed = await self._store.objects.root_seed()

    @property
    def seed(self) -> int | None:
        """The worker's seed: from the root seed and the worker id; ``None`` without a root."""
        return None if self.root_seed is None else worker_seed(self.root_seed, self._worker_id)

    def rng(self) -> Any:
        """The worker's ``numpy.random.Generator``, created on first use and then the same one."""
        if self._rng is None:
            self._rng = make_rng(self.seed)
        return self._rng

    # -- per batch ----------------------------------------------------------------------
    async def prepare(self, tasks: list[PoppedTask]) -> Prepared:
        """The keyword arguments of each task, or why it cannot run (one or two round trips)."""
        try:
            if not self._constants_current(tasks):
                await retrying("reading the network's constants", self._refresh_constants)
            fetched, problems = await retrying("reading large objects", lambda: self._fetch(tasks))
        except ServerError as exc:  # keys of the wrong type: data written by something else
            condition = Condition(CORRUPT, f"the network's constants or large objects cannot be read: {exc}")
            return [], [(task, condition) for task in tasks]
        ready: list[tuple[PoppedTask, dict[str, Any]]] = []
        failed: list[tuple[PoppedTask, Condition]] = []
        for task in tasks:
            kwargs = self._kwargs(task, fetched, problems)
            if isinstance(kwargs, Condition):
                failed.append((task, kwargs))
            else:
                ready.append((task, kwargs))
        return ready, failed

    def _constants_current(self, tasks: list[PoppedTask]) -> bool:
        """Whether every task was claimed with the version of the cached constants."""
        if not self._loaded or self._tracker is None:
            return False
        version = self._version
        versions = self._tracker.constants_version
        return all(versions(task.key) == version for task in tasks) and version != UNKNOWN_VERSION

    async def _refresh_constants(self) -> None:
        version = await self._store.objects.constants_version()
        if self._loaded and version == self._version:
            return
        constants: dict[str, Any] = {}
        error = None
        if version is not None:
            version, raws = await self._store.objects.read_constants()
            for name, raw in raws.items():
                try:
                    constants[name] = decode(raw)
                except Exception as exc:  # a damaged constant fails the tasks, not the worker
                    error = f"constant {name!r} of the network does not decode ({exc}); set it again"
        self._version, self._constants, self._constants_error = version, constants, error
        self._loaded = True

    async def _fetch(self, tasks: list[PoppedTask]) -> tuple[dict[str, Any], dict[str, str]]:
        """Values of the batch's large objects (cached or read now), and why some cannot be had."""
        wanted: dict[str, ObjectRef] = {}
        fetched: dict[str, Any] = {}
        for task in tasks:
            for value in task.xs.values():
                if type(value) is ObjectRef:
                    cached = self._objects.get(value.digest)
                    if cached is not None:
                        self._objects.move_to_end(value.digest)
                        fetched[value.digest] = cached[0]
                    else:
                        wanted[value.digest] = value
        problems: dict[str, str] = {}
        if wanted:
            raws = await self._store.objects.get_objects(list(wanted))
            for (digest, ref), raw in zip(wanted.items(), raws, strict=True):
                try:
                    fetched[digest] = value = load_object(ref, raw)
                except ValueError as exc:
                    problems[digest] = str(exc)
                    continue
                self._remember(digest, value, ref.size)
        return fetched, problems

    def _remember(self, digest: str, value: Any, size: int) -> None:
        self._objects[digest] = (value, size)
        self._cached += size
        while self._cached > self._cache_bytes and len(self._objects) > 1:
            _, (_, old) = self._objects.popitem(last=False)
            self._cached -= old

    def _kwargs(
        self, task: PoppedTask, fetched: dict[str, Any], problems: dict[str, str]
    ) -> dict[str, Any] | Condition:
        if self._constants_error is not None:
            return Condition(CORRUPT, f"task {task.key} cannot run: {self._constants_error}")
        constants = self._constants
        clash = sorted(constants.keys() & task.xs.keys()) if constants else []
        if clash:
            return Condition(
                "TaskError",
                f"inputs {clash} of task {task.key} have the names of constants of the network; "
                "rename the inputs or the constants",
            )
        kwargs: dict[str, Any] | None = None
        for name, value in task.xs.items():
            if type(value) is ObjectRef:
                if value.digest in problems:
                    return Condition(CORRUPT, f"input {name!r} of task {task.key}: {problems[value.digest]}")
                kwargs = dict(task.xs) if kwargs is None else kwargs
                kwargs[name] = fetched[value.digest]
        if kwargs is None and not constants:
            return task.xs  # the usual case: no copy
        return {**constants, **(task.xs if kwargs is None else kwargs)}
