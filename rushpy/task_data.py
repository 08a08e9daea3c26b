"""What a controller stores beside its tasks' own fields: derived seeds, large objects, constants.

:class:`TaskData` is a component of the :class:`~rushpy.Controller`, used by
its push methods (:mod:`rushpy.task_methods`) and by ``start_local_workers``
(:mod:`rushpy.supervision`). It holds the controller's root seed and
``large_object_bytes``, and the names of the network's constants (read once,
then kept up to date by this controller's own changes), so that an input with
the name of a constant is refused at push time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rushpy.errors import ConfigError, TaskError
from rushpy.seeds import check_root_seed, task_seed
from rushpy.store import Store
from rushpy.store.objects import split_large

__all__ = ["TaskData", "check_constants"]


def check_constants(constants: Any) -> dict[str, Any]:
    """A mapping of constants with identifier names, as a dict.

    Raises:
        TaskError: not a mapping, or a name is not a Python identifier (it is
            passed as a keyword argument).

    """
    if not isinstance(constants, Mapping):
        raise TaskError(f"constants must be a mapping of name to value, got {type(constants).__name__}")
    for name in constants:
        if not isinstance(name, str) or not name.isidentifier():
            raise TaskError(
                f"invalid constant name {name!r}: constants are passed as keyword arguments, "
                "so each name must be a Python identifier"
            )
    return dict(constants)


class TaskData:
    """Seeds, large objects and constants of the tasks one controller pushes.

    Args:
        store: The controller's store.
        seed: Root seed (``None``: tasks get a seed only from ``seeds=``).
        large_object_bytes: Inputs whose encoding is larger are stored once as
            large objects (``None``: never).

    Raises:
        ConfigError: ``seed`` or ``large_object_bytes`` is invalid.

    """

    def __init__(self, store: Store, *, seed: int | None, large_object_bytes: int | None) -> None:
        self.seed = check_root_seed(seed)
        if large_object_bytes is not None and (
            type(large_object_bytes) is not int or large_object_bytes <= 0
        ):
            raise ConfigError(
                f"invalid large_object_bytes={large_object_bytes!r}: use a number of bytes > 0, "
                "or None to keep every input in its task"
            )
        self.large_object_bytes = large_object_bytes
        self._store = store
        self._constant_names: frozenset[str] | None = None

    def forget(self) -> None:
        """Forget what was read of the network (after ``reset()``)."""
        self._constant_names = None

    async def store_root_seed(self) -> None:
        """Record the root seed in the network, for workers' own streams (if there is one).

        Raises:
            ConfigError: the network has another root seed.

        """
        if self.seed is not None:
            await self._store.objects.claim_seed_indices(self.seed, 0)

    async def set_constants(self, constants: Any) -> None:
        """Store constants in the network (replacing those of the same names).

        Raises:
            TaskError: a name or value is invalid (nothing is written).

        """
        constants = check_constants(constants)
        await self._store.objects.set_constants(constants)
        names = await self._names()
        self._constant_names = names | frozenset(constants)

    async def _names(self) -> frozenset[str]:
        if self._constant_names is None:
            self._constant_names = frozenset(await self._store.objects.constant_names())
        return self._constant_names

    async def prepare(
        self,
        tasks: list[dict[str, Any]],
        constants: Mapping[str, Any] | None,
    ) -> list[dict[str, Any]]:
        """Complete the fields of tasks about to be pushed, and store what they refer to.

        Checks that no input has the name of a constant, stores ``constants``,
        moves large inputs to large objects, and gives each task without an
        explicit seed the seed of its index in the network (with a root seed).

        Raises:
            TaskError: an input has the name of a constant, or is too large.
            ConfigError: the network has another root seed.

        """
        given = {} if constants is None else check_constants(constants)
        names = (await self._names()) | frozenset(given)
        if names:
            for i, task in enumerate(tasks):
                clash = names.intersection(task["xs"])
                if clash:
                    raise TaskError(
                        f"xss[{i}] has inputs {sorted(clash)} with the names of constants of the "
                        "network; rename the inputs or the constants"
                    )
        xss, blobs = split_large(
            [t["xs"] for t in tasks], self.large_object_bytes, self._store.max_task_bytes
        )
        if given:
            await self.set_constants(given)
        await self._store.objects.put_objects(blobs)
        out = [{**t, "xs": xs} if xs is not t["xs"] else t for t, xs in zip(tasks, xss, strict=True)]
        if self.seed is not None and any(t["seed"] is None for t in out):
            first = await self._store.objects.claim_seed_indices(self.seed, len(out))
            for i, task in enumerate(out):
                if task["seed"] is None:
                    task["seed"] = task_seed(self.seed, first + i)
        return out
