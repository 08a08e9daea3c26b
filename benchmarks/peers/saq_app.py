"""The saq app (imported by the adapter and by ``python -m saq``); URL from ``BENCH_URL``."""

from __future__ import annotations

import os
from typing import Any

from saq import Queue

from benchmarks.peers.tasks import aevaluate

URL = os.environ["BENCH_URL"]
queue = Queue.from_url(URL, name="bench")


async def evaluate(ctx: dict[str, Any], *, x: int, sleep: float = 0.0) -> int:
    """saq passes a context first and the job's kwargs after it."""
    return await aevaluate(x, sleep)


#: Worker settings for ``python -m saq benchmarks.peers.saq_app.settings``: one job at a time.
settings = {"queue": queue, "functions": [evaluate], "concurrency": 1}
