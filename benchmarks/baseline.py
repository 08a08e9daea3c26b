"""Hand-written LPUSH/BRPOP round trip between two processes: the floor for W2.

Run: .venv/bin/python -m benchmarks.baseline
A worker process BRPOPs a job list and LPUSHes a reply; the client times
LPUSH -> BRPOP of the reply, with redis.asyncio and msgpack like rushpy.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time

import msgpack
from redis.asyncio import Redis

import rushpy


async def _worker(port: int) -> None:
    client = Redis(port=port)
    while True:
        _, job = await client.brpop(["jobs"])  # type: ignore[misc]
        x = msgpack.unpackb(job)
        if x is None:
            break
        await client.lpush("replies", msgpack.packb({"y": x}))
    await client.aclose()


def worker_main(port: int) -> None:
    asyncio.run(_worker(port))


async def client_main(port: int, n: int) -> list[float]:
    client = Redis(port=port)
    lat = []
    for i in range(n + 20):
        t = time.perf_counter()
        await client.lpush("jobs", msgpack.packb(i))
        await client.brpop(["replies"])  # type: ignore[misc]
        if i >= 20:
            lat.append(time.perf_counter() - t)
    await client.lpush("jobs", msgpack.packb(None))
    await client.aclose()
    return lat


def main() -> None:
    with rushpy.EmbeddedServer() as server:
        assert server.port is not None
        proc = multiprocessing.Process(target=worker_main, args=(server.port,))
        proc.start()
        lat = sorted(asyncio.run(client_main(server.port, 500)))
        proc.join()
        print(
            f"baseline LPUSH/BRPOP latency: p50 {lat[len(lat) // 2] * 1e3:.3f} ms, "
            f"p99 {lat[int(len(lat) * 0.99)] * 1e3:.3f} ms, mean {statistics.mean(lat) * 1e3:.3f} ms"
        )


if __name__ == "__main__":
    main()
