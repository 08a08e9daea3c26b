"""The arq app, imported only inside ``benchmarks/.venv-arq`` (arq pins redis < 6); URL in ``BENCH_URL``."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from arq.connections import RedisSettings

from benchmarks.peers.tasks import aevaluate

URL = os.environ["BENCH_URL"]
#: arq workers poll their queue (a sorted set) every ``poll_delay`` s, 0.5 by default;
#: the producer polls each job's result the same way. A short poll keeps the
#: figures about the framework rather than about its default sleep.
POLL = 0.002


async def evaluate(ctx: dict[str, Any], x: int, sleep: float = 0.0) -> int:
    """arq passes a context first."""
    return await aevaluate(x, sleep)


class WorkerSettings:
    """``arq benchmarks.peers.arq_app.WorkerSettings``: one job at a time, short poll."""

    functions: ClassVar[list[Any]] = [evaluate]
    redis_settings = RedisSettings.from_dsn(URL)
    max_jobs = 1
    poll_delay = POLL
    log_results = False
