"""The dramatiq app (imported by the adapter and by ``dramatiq`` workers); URL from ``BENCH_URL``."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

from benchmarks.peers.tasks import evaluate

URL = os.environ["BENCH_URL"]
broker = RedisBroker(url=URL)  # type: ignore[no-untyped-call]
broker.add_middleware(Results(backend=RedisBackend(url=URL)))  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)
evaluate_actor = dramatiq.actor(actor_name="evaluate", store_results=True, max_retries=0)(evaluate)
