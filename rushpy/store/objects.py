"""Network data beside the tasks: the root seed and its counter, constants, large objects.

- **Seeds.** ``<base>:seed`` holds the root seed of ``Controller(seed=...)``
  (set once; a controller with another root is refused) and
  ``<base>:seed_index`` the number of task indices handed out: each push
  reserves its indices with one ``INCRBY``, so no two tasks of the network get
  the same index, whichever controller pushed them (:mod:`rushpy.seeds`).
- **Constants.** ``<base>:constants`` is a hash from name to msgpack value and
  ``<base>:constants_version`` a counter that every change moves, in the same
  transaction: a worker reads the counter once per batch and the hash only
  when the counter moved.
- **Large objects.** A task input whose encoded size exceeds the controller's
  ``large_object_bytes`` is stored once under ``<base>:object:<sha256>`` (the
  digest of its msgpack bytes, so an identical value is stored once) and the
  task holds a small :class:`~rushpy.codec.ObjectRef` instead. The digests are
  listed in ``<base>:objects`` so that ``reset()`` finds them without ``SCAN``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from rushpy.codec import ObjectRef, decode
from rushpy.errors import ConfigError, TaskError
from rushpy.store.base import Plumbing, text
from rushpy.store.encoding import encode_field

__all__ = ["LARGE_OBJECT_BYTES", "ObjectStore", "digest_of", "load_object", "split_large"]

LARGE_OBJECT_BYTES = 1 << 20
"""Default ``large_object_bytes``: task inputs whose encoding is larger are stored as large objects."""

_SCALARS = frozenset({int, float, bool, type(None)})


def _as_bytes(value: bytes | str | None) -> bytes | None:
    # The client never decodes replies (decode_responses=False); the stubs allow str.
    return value.encode() if isinstance(value, str) else value


def digest_of(raw: bytes) -> str:
    """The name of a large object: the SHA-256 (hex) of its msgpack bytes."""
    return hashlib.sha256(raw).hexdigest()


def _small(xs: Mapping[str, Any], limit: int) -> bool:
    """Whether no input of ``xs`` can exceed ``limit`` bytes, told without encoding (the usual case)."""
    for value in xs.values():
        kind = type(value)
        if kind in _SCALARS:
            continue
        # A str encodes to at most 4 bytes per character plus a 5-byte header.
        if kind is str and 4 * len(value) + 5 <= limit:
            continue
        return False
    return True


def split_large(
    xss: Sequence[Mapping[str, Any]], limit: int | None, max_object_bytes: int
) -> tuple[list[Mapping[str, Any]], dict[str, bytes]]:
    """Replace the inputs of more than ``limit`` encoded bytes by references to large objects.

    Args:
        xss: The tasks' inputs.
        limit: ``large_object_bytes`` (``None``: keep every input in its task).
        max_object_bytes: ``max_task_bytes``: no large object may exceed it either.

    Returns:
        The inputs with references in place of large values (a task without one
        is returned as it was), and the objects to store, by digest.

    Raises:
        TaskError: an input is larger than ``max_task_bytes`` (one that cannot be
            encoded is left for the store to refuse, with its path).

    """
    if limit is None:
        return list(xss), {}
    out: list[Mapping[str, Any]] = []
    blobs: dict[str, bytes] = {}
    for i, xs in enumerate(xss):
        if _small(xs, limit):
            out.append(xs)
            continue
        replaced: dict[str, Any] | None = None
        for name, value in xs.items():
            if type(value) in _SCALARS:
                continue
            try:
                raw = encode_field(value)
            except TaskError:
                continue  # the store refuses the task, naming the element (xs['x'][2])
            if len(raw) <= limit:
                continue
            if len(raw) > max_object_bytes:
                raise TaskError(
                    f"input {name!r} of task {i} is {len(raw):,} bytes encoded, more than "
                    f"max_task_bytes={max_object_bytes:,}, which also bounds one large object; raise "
                    "max_task_bytes on the Controller (at most 512 MB, the server's proto-max-bulk-len) "
                    "or store the data elsewhere (a file or object store) and pass its location"
                )
            digest = digest_of(raw)
            blobs[digest] = raw
            replaced = dict(xs) if replaced is None else replaced
            replaced[name] = ObjectRef(digest, len(raw))
        out.append(xs if replaced is None else replaced)
    return out, blobs


def load_object(ref: ObjectRef, raw: bytes | None) -> Any:
    """The value of a large object read from the server, checked against its digest.

    Raises:
        ValueError: the object is missing, does not match its digest, or does not decode;
            the message names the reference.

    """
    if raw is None:
        raise ValueError(
            f"large object sha256:{ref.digest} is missing (deleted by reset(), or evicted); "
            "push the task again"
        )
    if digest_of(raw) != ref.digest:
        raise ValueError(f"large object sha256:{ref.digest} does not match its digest (it was overwritten)")
    try:
        return decode(raw)
    except Exception as exc:  # stored bytes that do not decode: this task only
        raise ValueError(f"large object sha256:{ref.digest} does not decode: {exc}") from None


class ObjectStore(Plumbing):
    """Seeds, constants and large objects of one network (see :class:`~rushpy.store.base.Plumbing`)."""

    # -- seeds --------------------------------------------------------------------------
    async def claim_seed_indices(self, root: int, n: int) -> int:
        """Record ``root`` as the network's root seed and reserve ``n`` task indices.

        Returns:
            The first reserved index (the push's tasks get ``first .. first + n - 1``).

        Raises:
            ConfigError: the network already has another root seed.

        """
        k = self.keys
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.setnx(k.seed, str(root))
            pipe.get(k.seed)
            pipe.incrby(k.seed_index, n)
            _, stored, end = await pipe.execute()
        if stored is None or stored.decode(errors="replace") != str(root):
            raise ConfigError(
                f"network {k.network_id!r} has the root seed {text([stored])[0] if stored else None!r}, "
                f"not seed={root}: give every controller of a network the same seed, or reset() "
                "the network first"
            )
        return int(end) - n

    async def root_seed(self) -> int | None:
        """The network's root seed, or ``None`` when it has none (or an unreadable one)."""
        raw = await self.client.get(self.keys.seed)
        try:
            return None if raw is None else int(raw)
        except ValueError:
            return None  # damaged: workers run without their own stream rather than fail

    # -- constants ----------------------------------------------------------------------
    async def set_constants(self, constants: Mapping[str, Any]) -> None:
        """Store (or replace) constants by name and move the version, in one transaction.

        Raises:
            TaskError: a value cannot be encoded, or exceeds ``max_task_bytes``.

        """
        if not constants:
            return
        fields: dict[str, bytes] = {}
        for name, value in constants.items():
            fields[name] = raw = encode_field(value)
            if len(raw) > self.max_task_bytes:
                raise TaskError(
                    f"constant {name!r} is {len(raw):,} bytes encoded, more than "
                    f"max_task_bytes={self.max_task_bytes:,}; raise max_task_bytes on the Controller "
                    "(at most 512 MB) or store it elsewhere and pass its location"
                )
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.constants, mapping=fields)  # type: ignore[arg-type]
            pipe.incr(self.keys.constants_version)
            await pipe.execute()

    async def constant_names(self) -> set[str]:
        """Names of the network's constants."""
        return set(text(await self.client.hkeys(self.keys.constants)))

    async def constants_version(self) -> bytes | None:
        """The constants' version as stored (compared, never parsed); ``None``: no constants."""
        return _as_bytes(await self.client.get(self.keys.constants_version))

    async def read_constants(self) -> tuple[bytes | None, dict[str, bytes]]:
        """The version and the encoded constants, read together (one transaction)."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.constants_version)
            pipe.hgetall(self.keys.constants)
            version, raw = await pipe.execute()
        return version, {name.decode(errors="replace"): value for name, value in raw.items()}

    # -- large objects ------------------------------------------------------------------
    async def put_objects(self, blobs: Mapping[str, bytes]) -> None:
        """Store large objects by digest (an existing one is kept: same digest, same bytes)."""
        if not blobs:
            return
        async with self.client.pipeline(transaction=True) as pipe:
            for digest, raw in blobs.items():
                pipe.set(self.keys.object(digest), raw, nx=True)
            pipe.sadd(self.keys.objects, *blobs)
            await pipe.execute()

    async def get_objects(self, digests: Sequence[str]) -> list[bytes | None]:
        """The stored bytes of large objects (``None`` for a missing one), in one round trip."""
        raw = await self.client.mget([self.keys.object(d) for d in digests])
        return [_as_bytes(r) for r in raw]
