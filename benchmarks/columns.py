"""Controller RAM per cached row and cold-fetch cost: the dict cache against :class:`RowColumns`.

Run: .venv/bin/python -m benchmarks.columns [--n N ...] [--cold N]
(default: RAM at 100,000 and 1,000,000 rows, cold fetch at 100,000 rows)

RAM: ``tracemalloc`` counts the bytes held after caching N small finished
tasks (``xs={"x": i}``, ``ys={"y": i}``, as a worker writes them: worker id,
three timestamps, attempts, claim and completion tokens), once as today's
list of ``flatten_task`` dicts and once as a :class:`~rushpy.columns.RowColumns`.
The hashes are built in memory in the exact form ``read.lua`` returns them.

Cold fetch: ``push_finished_tasks`` of N small tasks on a private embedded
server, then, per row and as the best of 3, the read of every hash plus
building the cache (``read_tasks`` + ``flatten_task`` today, ``read_raw`` +
``RowColumns.append``), and on the columnar cache ``table["y"]`` and all rows
as dicts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import gc
import secrets
import time
import tracemalloc
import uuid
from collections.abc import Callable
from typing import Any

import rushpy
from rushpy.codec import encode
from rushpy.columns import RowColumns
from rushpy.fields import decode_task
from rushpy.table import Table, flatten_task

__all__ = ["cold_fetch", "main", "ram_per_row"]

_BATCH = 10_000


def _hashes(n: int) -> tuple[list[str], list[list[bytes]]]:
    """N finished-task hashes as ``read.lua`` returns them (a worker's fields, small values)."""
    now = dt.datetime.now(dt.UTC)
    wids = [encode(f"host-{secrets.token_hex(4)}") for _ in range(4)]
    keys, hashes = [], []
    for i in range(n):
        t = now + dt.timedelta(microseconds=i)
        fields = [
            (b"created_at", encode(t)),
            (b"xs", encode({"x": i})),
            (b"worker_id", wids[i % 4]),
            (b"started_at", encode(t)),
            (b"attempts", encode(1)),
            (b"claim", encode(secrets.token_hex(8))),
            (b"done", encode(secrets.token_hex(8))),
            (b"finished_at", encode(t)),
            (b"ys", encode({"y": i})),
        ]
        keys.append(base64.urlsafe_b64encode(secrets.token_bytes(12)).decode())  # rushpy's key format
        hashes.append([b for pair in fields for b in pair])
    return keys, hashes


def _held(build: Callable[[], Any]) -> tuple[float, Any]:
    """Bytes still allocated once ``build`` returns (its result kept alive)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, kept


def ram_per_row(n: int) -> tuple[float, float]:
    """Bytes per cached row: (dict cache, RowColumns), for ``n`` small rows."""
    keys, hashes = _hashes(n)

    def dicts() -> list[dict[str, Any]]:
        return [flatten_task(k, "finished", decode_task(h)) for k, h in zip(keys, hashes, strict=True)]

    def columns() -> RowColumns:
        cols = RowColumns("finished")
        for start in range(0, n, _BATCH):
            cols.append(keys[start : start + _BATCH], hashes[start : start + _BATCH])
        return cols

    old, kept = _held(dicts)
    del kept
    new, kept = _held(columns)
    assert len(kept) == n and kept.n_odd == 0
    return old / n, new / n


async def _best_us(call: Callable[[], Any], n: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        await call()
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


async def cold_fetch(n: int) -> dict[str, float]:
    """µs per row of a cold read of ``n`` finished tasks into each cache, and of reading it back."""
    with rushpy.EmbeddedServer() as server:
        async with rushpy.Controller(f"bench-{uuid.uuid4().hex[:8]}", config=server.config) as rush:
            keys: list[str] = []
            for start in range(0, n, _BATCH):
                size = min(_BATCH, n - start)
                keys += await rush.push_finished_tasks(
                    [{"x": i} for i in range(start, start + size)],
                    [{"y": i} for i in range(start, start + size)],
                )
            reads = rush._store.reads  # the store the cache reads through
            cols = RowColumns("finished")

            async def dict_cache() -> None:
                rows: list[dict[str, Any]] = []
                for start in range(0, n, _BATCH):
                    part = keys[start : start + _BATCH]
                    hashes = await reads.read_tasks(part)
                    rows += [flatten_task(k, "finished", t) for k, t in zip(part, hashes, strict=True) if t]

            async def raw_only() -> None:
                for start in range(0, n, _BATCH):
                    await reads.read_raw(keys[start : start + _BATCH])

            async def columnar() -> None:
                nonlocal cols
                cols = RowColumns("finished")
                for start in range(0, n, _BATCH):
                    part = keys[start : start + _BATCH]
                    cols.append(part, await reads.read_raw(part))

            raws = [await reads.read_raw(keys[start : start + _BATCH]) for start in range(0, n, _BATCH)]

            async def append_only() -> None:
                fresh = RowColumns("finished")
                for i, start in enumerate(range(0, n, _BATCH)):
                    fresh.append(keys[start : start + _BATCH], raws[i])

            async def packed_only() -> None:
                for start in range(0, n, _BATCH):
                    await reads.read_packed(keys[start : start + _BATCH])

            packed = [await reads.read_packed(keys[start : start + _BATCH]) for start in range(0, n, _BATCH)]

            async def append_rows_only() -> None:
                fresh = RowColumns("finished")
                for i, start in enumerate(range(0, n, _BATCH)):
                    fresh.append_rows(keys[start : start + _BATCH], [r for r in packed[i] if r is not None])

            async def controller_cold() -> None:
                async with rushpy.Controller(rush.network_id, config=server.config) as fresh:
                    assert len(await fresh.fetch_finished_tasks()) == n

            async def column_y() -> None:
                Table.over(cols)["y"]

            async def all_rows() -> None:
                assert len(Table.over(cols).rows) == n

            figures = {
                "dict cache: read_tasks + flatten_task": await _best_us(dict_cache, n),
                "read_raw alone (server + RESP parsing)": await _best_us(raw_only, n),
                "RowColumns: read_raw + append": await _best_us(columnar, n),
                "RowColumns.append alone (replies read before)": await _best_us(append_only, n),
                "read_packed alone (HMGET of the rows hash)": await _best_us(packed_only, n),
                "RowColumns.append_rows alone (rows read before)": await _best_us(append_rows_only, n),
                "a new controller's fetch_finished_tasks": await _best_us(controller_cold, n),
                'lazy table["y"] of the cache': await _best_us(column_y, n),
                "every row as a dict (Table.over(...).rows)": await _best_us(all_rows, n),
            }
            await rush.reset()
    return figures


def main(argv: list[str] | None = None) -> None:
    """Print RAM per row and cold-fetch µs per row (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.columns", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, nargs="+", default=[100_000, 1_000_000], help="rows for the RAM figures"
    )
    parser.add_argument("--cold", type=int, default=100_000, help="rows for the cold fetch (0: skip)")
    args = parser.parse_args(argv)
    print("controller RAM per cached row (tracemalloc), small rows")
    print(f"{'rows':>10}  {'dict cache':>12}  {'RowColumns':>12}  ratio")
    for n in args.n:
        old, new = ram_per_row(n)
        print(f"{n:>10,}  {old:>10,.0f} B  {new:>10,.0f} B  {old / new:5.1f}x")
    if args.cold:
        print(f"\ncold fetch of {args.cold:,} finished tasks, µs per row (best of 3)")
        for name, us in asyncio.run(cold_fetch(args.cold)).items():
            print(f"  {name:<46} {us:7.2f}")


if __name__ == "__main__":
    main()
