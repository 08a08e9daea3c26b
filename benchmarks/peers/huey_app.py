"""The huey app (imported by the adapter and by ``huey_consumer``); URL from ``BENCH_URL``."""

from __future__ import annotations

import os

from huey import RedisHuey  # type: ignore[import-untyped]

from benchmarks.peers.tasks import evaluate

URL = os.environ["BENCH_URL"]
# notify_result: results wake the producer by BLPOP instead of polling with backoff (huey's fast path).
huey = RedisHuey("bench", url=URL, results=True, blocking=True, notify_result=True)
evaluate_task = huey.task()(evaluate)
