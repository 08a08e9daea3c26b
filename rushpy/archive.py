"""Export a whole network to one file, and import it into another network or server.

The file is a stream of msgpack maps (gzip-compressed when its name ends in
``.gz``), written and read one chunk at a time, so a large network never has
to fit in memory at once:

1. a header: ``{"format": "rushpy-network", "version": 1, "network_id",
   "prefix", "exported_at"}``;
2. ``{"kind": "constants", ...}`` and ``{"kind": "objects", ...}`` (large
   objects), before the tasks whose inputs may name them;
3. ``{"kind": "tasks", "tasks": [[key, state, {field: bytes}], ...]}`` chunks:
   the finished tasks first, in finish order, then every other task in
   creation order with its state (pending tasks count as queued);
4. ``{"kind": "workers", ...}`` and ``{"kind": "start_args", ...}``;
5. a trailer ``{"kind": "end", "n_tasks": N, "n_workers": M}``, so a
   truncated file is refused before anything is written.

Field values are the bytes Redis held, so results, conditions, attempts,
seeds and timestamps come back exactly. On import:

- queued **and running** tasks are queued again, at the tail of the shared
  queue: no worker of the new network runs them (the interrupted attempt
  stays counted in ``attempts``); priority tasks join the shared queue;
- finished tasks keep their finish order; failed ones stay failed;
- workers are recorded with their state, a running one as ``lost``;
- the start arguments are **not** imported: they name code to run, and are
  signed for the network they were stored in (see ``docs/security.md``);
  start workers with ``fun=`` or store new start arguments;
- into a network that has tasks or workers, an import is refused unless
  ``merge=True``; merging skips tasks and workers whose ids exist already.
"""

from __future__ import annotations

import datetime as dt
import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio.to_thread
import msgpack  # type: ignore[import-untyped]

from rushpy.errors import ConfigError
from rushpy.models import TaskState
from rushpy.store import Store
from rushpy.store import archive as raw
from rushpy.store.base import CHUNK, chunks

__all__ = ["FORMAT", "VERSION", "ArchiveSummary", "export_network", "import_network"]

FORMAT = "rushpy-network"
"""The ``format`` of an archive's header."""
VERSION = 1
"""The archive version this rushpy writes and reads."""

_MAX_RECORD = 2**31 - 1  # one record holds at most a chunk (about 32 MiB, or one large task)


@dataclass(frozen=True, slots=True)
class ArchiveSummary:
    """What an export wrote or an import read.

    Attributes:
        path: The archive file.
        network_id: The network exported from (as named in the header).
        n_tasks: Tasks written (export) or imported (import).
        n_workers: Workers written or imported.
        states: Tasks per state as exported (import: as they were in the file).
        skipped: Tasks and workers skipped by a merge because their ids existed.
        start_args: Whether the file holds start arguments (never imported).

    """

    path: Path
    network_id: str
    n_tasks: int
    n_workers: int
    states: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    start_args: bool = False


def _open(path: Path, mode: str) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "b")  # type: ignore[return-value]
    return open(path, mode + "b")


async def export_network(store: Store, path: str | Path) -> ArchiveSummary:
    """Write every task, worker, constant and large object of the network to ``path``.

    The task states come from one consistent snapshot; tasks that change state
    while the export runs are written with their state at the snapshot and
    their fields at the moment they are read (export a finished study, or stop
    the workers first, for an exact copy).
    """
    path = Path(path)
    reads = store.reads
    snap = await reads.snapshot()
    state_of = {key: state.value for state, keys in snap.items() for key in keys}
    finished = snap[TaskState.FINISHED]
    done = set(finished)
    order = finished + [key for key in await reads.all_keys() if key not in done and key in state_of]
    counts: dict[str, int] = {}
    with _open(path, "w") as out:
        packer = msgpack.Packer(use_bin_type=True)

        async def put(record: dict[str, Any]) -> None:
            await anyio.to_thread.run_sync(out.write, packer.pack(record))

        keys = store.keys
        await put(
            {
                "format": FORMAT,
                "version": VERSION,
                "network_id": keys.network_id,
                "prefix": keys.prefix,
                "exported_at": dt.datetime.now(dt.UTC).isoformat(),
            }
        )
        # Constants and large objects first: a task imported as queued may be run
        # at once, and its inputs may name them.
        constants, objects, start_args = await raw.read_extras(store.workers)
        await put({"kind": "constants", "fields": constants})
        for lo, hi in chunks([len(v) for _, v in objects]):
            await put({"kind": "objects", "objects": [list(o) for o in objects[lo:hi]]})
        n_tasks = 0
        for start in range(0, len(order), CHUNK):
            part = order[start : start + CHUNK]
            hashes = await raw.read_task_hashes(store.tasks, part)
            tasks: list[tuple[str, str, dict[str, bytes]]] = [
                (key, state_of[key], fields) for key, fields in zip(part, hashes, strict=True) if fields
            ]
            sizes = [sum(len(v) for v in fields.values()) for _, _, fields in tasks]
            for lo, hi in chunks(sizes):  # records of about 32 MiB at most
                await put({"kind": "tasks", "tasks": [list(t) for t in tasks[lo:hi]]})
            for _, state, _ in tasks:
                counts[state] = counts.get(state, 0) + 1
            n_tasks += len(tasks)
        workers = await raw.read_workers(store.workers)
        await put({"kind": "workers", "workers": [list(w) for w in workers]})
        if start_args is not None:
            await put({"kind": "start_args", "raw": start_args})
        await put({"kind": "end", "n_tasks": n_tasks, "n_workers": len(workers)})
    return ArchiveSummary(
        path, keys.network_id, n_tasks, len(workers), counts, start_args=start_args is not None
    )


def _records(path: Path) -> Iterator[Any]:
    with _open(path, "r") as f:
        yield from msgpack.Unpacker(f, raw=False, max_buffer_size=_MAX_RECORD, strict_map_key=False)


def _check_header(header: Any, path: Path) -> dict[str, Any]:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a rushpy network archive (no {FORMAT!r} header)")
    if header.get("version") != VERSION:
        raise ConfigError(
            f"{path} is a rushpy archive of version {header.get('version')!r}; this rushpy reads "
            f"version {VERSION}: import it with the rushpy version that exported it"
        )
    return header


async def _scan(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read the whole file once without writing: header and trailer, or a ``ConfigError``."""

    def scan() -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            records = _records(path)
            header = _check_header(next(records, None), path)
            last: Any = None
            for last in records:
                if not isinstance(last, dict) or "kind" not in last:
                    raise ConfigError(f"{path} holds a record that is not part of a rushpy archive")
        except (OSError, ValueError, EOFError, msgpack.UnpackException) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"cannot read the archive {path}: {type(exc).__name__}: {exc}") from None
        if not isinstance(last, dict) or last.get("kind") != "end":
            raise ConfigError(f"{path} is truncated (no end record): export the network again")
        return header, last

    return await anyio.to_thread.run_sync(scan)


async def import_network(store: Store, path: str | Path, *, merge: bool = False) -> ArchiveSummary:
    """Load an archive written by :func:`export_network` into the network of ``store``.

    Raises:
        ConfigError: the file is missing, not an archive, of another version or
            truncated (nothing written); or the network is not empty and
            ``merge`` is false.

    """
    path = Path(path)
    header, _ = await _scan(path)
    if not merge and not await raw.network_is_empty(store.tasks):
        raise ConfigError(
            f"network {store.keys.network_id!r} already has tasks or workers: import {path} into an "
            "empty network, reset() this one first, or pass merge=True to add the archive's tasks "
            "(those whose keys exist are skipped)"
        )
    n_tasks = n_workers = skipped = 0
    states: dict[str, int] = {}
    start_args = False
    records = _records(path)
    next(records)  # the header, checked by the scan
    while True:
        record = await anyio.to_thread.run_sync(next, records, None)
        if record is None or record.get("kind") == "end":
            break
        kind = record.get("kind")
        if kind == "tasks":
            tasks = [(str(k), str(s), dict(f)) for k, s, f in record["tasks"]]
            for _, state, _ in tasks:
                states[state] = states.get(state, 0) + 1
            written = await raw.restore_tasks(store.tasks, tasks, merge=merge)
            n_tasks += written
            skipped += len(tasks) - written
        elif kind == "workers":
            workers = [(str(w), str(s), dict(f)) for w, s, f in record["workers"]]
            written = await raw.restore_workers(store.workers, workers, merge=merge)
            n_workers += written
            skipped += len(workers) - written
        elif kind == "constants":
            await raw.restore_extras(store.workers, dict(record["fields"]), [])
        elif kind == "objects":
            await raw.restore_extras(store.workers, {}, [(str(d), bytes(v)) for d, v in record["objects"]])
        elif kind == "start_args":
            start_args = True  # never imported: see the module's docstring
    return ArchiveSummary(
        path, str(header.get("network_id")), n_tasks, n_workers, states, skipped, start_args
    )
