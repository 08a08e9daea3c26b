"""The celery app (imported by the adapter and by ``celery worker``); URL from ``BENCH_URL``."""

from __future__ import annotations

import os

from celery import Celery  # type: ignore[import-untyped]

from benchmarks.peers.tasks import evaluate

URL = os.environ["BENCH_URL"]
app = Celery("bench", broker=URL, backend=URL)
app.conf.update(worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True)
evaluate_task = app.task(name="evaluate")(evaluate)
