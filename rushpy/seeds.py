"""Reproducible random streams: seeds of tasks and of workers, and ready numpy generators.

A controller created with ``Controller(..., seed=ROOT)`` gives every task it
pushes its own seed, derived from the root seed and the task's *index in the
network*: a per-network counter that each push advances atomically, so two
controllers (or a restarted one) never hand out an index twice. The seed is
computed at push time and stored with the task, so it does not depend on which
worker runs the task, nor when, nor in what order.

The derivation is stable and needs nothing but the standard library::

    seed = int.from_bytes(blake2b(root.to_bytes(8, "little") + index.to_bytes(8, "little"),
                                  digest_size=8, person=b"rushpy.task").digest(), "little")

BLAKE2b is a cryptographic hash, so seeds of neighbouring indices are
unrelated (like ``numpy.random.SeedSequence`` spawn keys, but numpy-free and
identical on every platform and Python version). A worker's own stream (for
worker loops, :attr:`rushpy.Worker.seed`) hashes the root with the worker id
under another personalisation (``b"rushpy.worker"``), so it never coincides
with a task's seed.
"""

from __future__ import annotations

import hashlib
from typing import Any

from rushpy.errors import ConfigError, WorkerFunctionError

__all__ = ["MAX_SEED", "check_root_seed", "make_rng", "task_seed", "worker_seed"]

MAX_SEED = 1 << 64
"""Seeds are integers in ``[0, MAX_SEED)``: what msgpack stores as an unsigned 64-bit integer."""

_TASK = b"rushpy.task"
_WORKER = b"rushpy.worker"


def check_root_seed(seed: Any) -> int | None:
    """Validate a root seed (``Controller(seed=...)``); ``None`` passes.

    Raises:
        ConfigError: not an integer in ``[0, 2**64)``.

    """
    if seed is None:
        return None
    if type(seed) is not int or not 0 <= seed < MAX_SEED:
        raise ConfigError(f"invalid seed={seed!r}: use an integer in [0, 2**64), or None for no seeds")
    return seed


def _hash(person: bytes, data: bytes) -> int:
    digest = hashlib.blake2b(data, digest_size=8, person=person).digest()
    return int.from_bytes(digest, "little")


def task_seed(root: int, index: int) -> int:
    """The seed of the task with ``index`` (0, 1, ...) in a network with root seed ``root``.

    Example:
        >>> task_seed(42, 0) == task_seed(42, 0) != task_seed(42, 1)
        True

    """
    return _hash(_TASK, root.to_bytes(8, "little") + index.to_bytes(8, "little"))


def worker_seed(root: int, worker_id: str) -> int:
    """The seed of a worker's own stream in a network with root seed ``root``."""
    return _hash(_WORKER, root.to_bytes(8, "little") + worker_id.encode())


def make_rng(seed: int | None) -> Any:
    """``numpy.random.default_rng(seed)``: a fresh entropy stream for ``None``.

    Raises:
        WorkerFunctionError: numpy is not installed; says how to fix it.

    """
    try:
        import numpy as np  # noqa: PLC0415 - optional dependency, only for functions taking rng
    except ImportError:
        raise WorkerFunctionError(
            "the function declares a parameter 'rng' (a numpy.random.Generator), but numpy is not "
            "installed on this worker: pip install numpy, or declare 'seed' instead and build "
            "your own generator"
        ) from None
    return np.random.default_rng(seed)
