"""The taskiq app (imported by the adapter and by ``taskiq worker``); URL from ``BENCH_URL``."""

from __future__ import annotations

import os

from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

from benchmarks.peers.tasks import aevaluate

URL = os.environ["BENCH_URL"]
broker = ListQueueBroker(URL, queue_name="bench").with_result_backend(RedisAsyncResultBackend(URL))
evaluate_task = broker.register_task(aevaluate, task_name="evaluate")
