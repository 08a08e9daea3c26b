"""Worker logs in Redis (read_log, print_log), the worker's status lines, and its output files."""

from __future__ import annotations

import datetime as dt
import io
import logging
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio

from rushpy import Controller, EmbeddedServer, RedisConfig, Worker
from rushpy.codec import decode
from rushpy.errors import ConfigError, ServerFullError
from rushpy.logs import STATUS_LOGGER, configure_cli_logging, get_logger
from rushpy.store import Store
from rushpy.worker import run_function
from rushpy.worker.logsink import LogSink, to_record
from rushpy.worker.results import TaskCounts
from tests import log_funcs
from tests.helpers import eventually, spawn_cli, wait_exit


@pytest.fixture
def status_lines() -> Iterator[None]:
    """Status lines at info, as the worker command line shows them (an application chooses)."""
    status = logging.getLogger(STATUS_LOGGER)
    saved = status.level
    status.setLevel(logging.INFO)
    try:
        yield
    finally:
        status.setLevel(saved)


def _record(message: str, name: str = "tests.sink") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None)


async def _events(rush: Controller | Worker, worker_id: str | None = None) -> list[str]:
    return [r["event"] for r in await rush.read_log(worker_id)]


# -- the worker command line -------------------------------------------------------------------
async def test_cli_worker_prints_status_lines_and_ships_them_to_redis(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    async with EmbeddedServer(password="s3cret-pw") as srv, Controller("logs", config=srv.config) as rush:
        proc = spawn_cli(
            srv.config,
            ["--network", "logs", "--fun", "tests.log_funcs:fail_loudly", "--concurrency", "2"],
            tmp_path,
            processes,
        )
        await rush.wait_for_workers(1, timeout=30)
        keys = await rush.push_tasks([{"x": 1}, {"x": 2}])
        await rush.wait_for_tasks(keys, timeout=30)
        await rush.stop_workers()
        assert await wait_exit(proc) == 0
        output = (tmp_path / "worker-0.log").read_text()
        # Shown at the default level (warning): start, each failure, why it stopped.
        assert "worker started" in output and "network=logs" in output
        assert "fun=tests.log_funcs:fail_loudly" in output and "concurrency=2" in output
        assert f"server=redis://127.0.0.1:{srv.port}" in output
        assert "s3cret-pw" not in output
        assert output.count("task failed") == 2 and "bad input 1" in output
        assert "second line" not in output  # one line per failure
        assert "worker stopped" in output and "terminate requested" in output
        log = await rush.read_log()
        events = log["event"]
        assert events[0] == "worker started" and events.count("task failed") == 2
        assert events[-1] == "worker stopped" and log[-1]["state"] == "terminated"
        proc_id = log[0]["worker_id"]
        assert set(log["worker_id"]) == {proc_id}
        assert log.columns[:5] == ["worker_id", "timestamp", "level", "logger", "event"]
        assert {r["type"] for r in log if r["event"] == "task failed"} == {"RuntimeError"}
        assert all(isinstance(t, dt.datetime) and t.tzinfo for t in log["timestamp"])
        out = io.StringIO()
        assert await rush.print_log(file=out) == len(log)
        assert f"[{proc_id}]" in out.getvalue() and "worker stopped" in out.getvalue()
        assert await rush.print_log(file=out) == 0  # printed once only
        await rush.reset()


async def test_cli_worker_says_it_stopped_on_sigterm_and_is_quiet_at_level_error(
    config: RedisConfig, network_id: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    async with Controller(network_id, config=config) as rush:
        base = ["--network", network_id, "--fun", "tests.funcs:square"]
        loud = spawn_cli(config, base, tmp_path, processes)
        quiet = spawn_cli(config, [*base, "--log-level", "error"], tmp_path, processes)
        await rush.wait_for_workers(2, timeout=30)
        loud.send_signal(signal.SIGTERM)
        quiet.send_signal(signal.SIGTERM)
        assert await wait_exit(loud) == 0 and await wait_exit(quiet) == 0
        assert "reason=SIGTERM" in (tmp_path / "worker-0.log").read_text()
        assert (tmp_path / "worker-1.log").read_text() == ""
        # At level error nothing is recorded in Redis either: the levels decide for both.
        rows = await rush.read_log()
        assert {r["event"] for r in rows if r["event"] == "worker stopped"} == {"worker stopped"}
        assert len({r["worker_id"] for r in rows}) == 1
        await rush.reset()


async def test_a_worker_loop_names_its_loop_in_the_start_line(
    config: RedisConfig, network_id: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    args = ["--network", network_id, "--worker-loop", "tests.loop_funcs:until_terminated"]
    proc = spawn_cli(config, args, tmp_path, processes)
    async with Controller(network_id, config=config) as rush:
        await rush.wait_for_workers(1, timeout=30)
        await rush.stop_workers()
        assert await wait_exit(proc) == 0
        started = next(r for r in await rush.read_log() if r["event"] == "worker started")
        assert started["worker_loop"] == "tests.loop_funcs:until_terminated"
        assert "fun" not in started and "concurrency" not in started
        await rush.reset()


async def test_local_worker_writing_1mb_to_stderr_finishes(controller: Controller) -> None:
    assert len(await controller.read_log()) == 0  # no worker yet
    await controller.start_local_workers(1, fun=log_funcs.shout)
    keys = await controller.push_tasks([{"x": 1}, {"x": 2}])
    table = await controller.wait_for_tasks(keys, timeout=60)
    assert table["state"] == ["finished", "finished"]
    [local] = controller.local_workers.values()
    assert local.log_path.stat().st_size > 2 * 1024 * 1024  # both writes reached its file


# -- in-process workers: the function's own logging --------------------------------------------
@pytest.mark.parametrize("fun", [log_funcs.chatty, log_funcs.async_chatty], ids=["thread", "async"])
@pytest.mark.usefixtures("status_lines")
async def test_function_logging_goes_to_its_workers_log(
    controller: Controller, config: RedisConfig, network_id: str, fun: Callable[..., Any]
) -> None:
    logging.getLogger("tests.user").setLevel(logging.WARNING)
    keys = await controller.push_tasks([{"x": i} for i in range(4)])
    async with (
        Worker(network_id, config) as a,
        Worker(network_id, config) as b,
        anyio.create_task_group() as tg,
    ):
        for w in (a, b):
            tg.start_soon(run_function, w, fun)
        await controller.wait_for_tasks(keys, timeout=30)
        a.set_terminated()
        b.set_terminated()
    everything = await controller.read_log()
    # The worker's own lines name it and reach its log, whatever context ran them.
    for w in (a, b):
        assert [r["worker_id"] for r in everything if r["event"] == "worker stopped"].count(w.worker_id) == 1
    rows = [r for r in everything if r["logger"] == "tests.user"]
    assert sorted(r["event"].split()[-1] for r in rows) == ["0", "1", "2", "3"]
    by_x = {r["x"]: r["worker_id"] for r in await controller.fetch_finished_tasks()}
    # Each record went to the log of the worker that ran the task.
    assert all(r["worker_id"] == by_x[int(r["event"].split()[-1])] for r in rows)
    assert all(r["level"] == "warning" for r in rows)
    # Filters: one worker, and a time after everything.
    assert {r["worker_id"] for r in await a.read_log(a.worker_id)} == {a.worker_id}
    assert len(await controller.read_log(since=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))) == 0
    naive = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=1)
    assert len(await controller.read_log([a.worker_id, b.worker_id], since=naive)) >= len(rows)
    assert len(await controller.read_log(since=0.0)) >= len(rows)
    with pytest.raises(ConfigError, match="since"):
        await controller.read_log(since="yesterday")  # type: ignore[arg-type]


# -- the sink ----------------------------------------------------------------------------------
@pytest.fixture
async def registered(store: Store) -> AsyncIterator[str]:
    await store.workers.register_worker("w1", {"pid": 1})
    yield "w1"


async def test_records_flush_in_one_batch_and_the_stream_stays_capped(
    store: Store, registered: str, raw: redis.asyncio.Redis
) -> None:
    sink = LogSink(store, registered, TaskCounts(), max_records=50)
    for i in range(1000):
        sink.add(_record(f"record {i}"))
    assert sink.buffered == 1000
    assert await sink.flush() is True
    assert sink.buffered == 0
    length = await raw.xlen(store.keys.log(registered))
    assert 50 <= length < 300  # MAXLEN ~: whole nodes are trimmed, never many more
    assert await sink.flush() is None  # nothing new: nothing written
    assert await raw.xlen(store.keys.log(registered)) == length


async def test_changed_counts_alone_wait_for_their_own_interval(
    store: Store, registered: str, raw: redis.asyncio.Redis
) -> None:
    counts = TaskCounts()
    sink = LogSink(store, registered, counts)
    counts.finished = 4
    assert await sink.flush(counts_due=False) is None  # no records: the counts wait
    assert await raw.hget(store.keys.worker(registered), "n_finished") is None
    assert await sink.flush(counts_due=True) is True
    assert decode(await raw.hget(store.keys.worker(registered), "n_finished")) == 4
    counts.finished = 5
    sink.add(_record("a record"))
    assert await sink.flush(counts_due=False) is True  # records go out, the counts with them
    assert decode(await raw.hget(store.keys.worker(registered), "n_finished")) == 5


async def test_a_full_buffer_drops_records_and_counts_them(
    config: RedisConfig, network_id: str, store: Store, registered: str
) -> None:
    sink = LogSink(store, registered, TaskCounts(finished=3), buffer_records=10)
    for i in range(25):
        sink.add(_record(f"record {i}"))
    assert (sink.buffered, sink.dropped) == (10, 15)
    await sink.flush()
    async with Controller(network_id, config=config) as rush:
        rows = await rush.read_log()
        info = (await rush.worker_info())[0]
    assert len(rows) == 11 and rows[-1]["n"] == 15 and "dropped" in rows[-1]["event"]
    assert (info["log_dropped"], info["n_finished"]) == (15, 3)


async def test_a_full_server_keeps_records_buffered_until_it_has_memory() -> None:
    async with EmbeddedServer() as srv, Worker("full", srv.config) as worker:
        admin = redis.asyncio.Redis.from_url(srv.config.to_url(include_password=True))
        sink = LogSink(worker._store, worker.worker_id, TaskCounts(), flush_interval=0.01)
        await admin.setrange("ballast", 4 * 1024 * 1024, b"x")
        used = int((await admin.info("memory"))["used_memory"])
        await admin.config_set("maxmemory", used - 1024 * 1024)
        try:
            sink.add(_record("while the server is full"))
            with pytest.raises(ServerFullError):
                await sink.flush()
            async with anyio.create_task_group() as tg:
                sink.start(tg)  # its loop retries, the worker goes on
                refused = int((await admin.info("stats"))["total_error_replies"])

                async def retried() -> bool:
                    return int((await admin.info("stats"))["total_error_replies"]) > refused + 2

                await eventually(retried, "the flush loop retrying")
                assert sink.buffered == 1  # kept, not lost, not grown
                closing = LogSink(worker._store, worker.worker_id, TaskCounts())
                closing.add(_record("lost with the exit"))
                await closing.close()  # an exit does not wait for a full server
                await admin.config_set("maxmemory", 0)

                async def written() -> bool:
                    return "while the server is full" in await _events(worker, worker.worker_id)

                await eventually(written, "the record written once the server has memory")
                tg.cancel_scope.cancel()
            await sink.close()
        finally:
            await admin.config_set("maxmemory", 0)
            await admin.aclose()


async def test_a_flush_after_reset_recreates_no_key(
    store: Store, registered: str, raw: redis.asyncio.Redis
) -> None:
    sink = LogSink(store, registered, TaskCounts())
    await store.reset()
    sink.add(_record("late"))
    assert await sink.flush() is True
    assert not await raw.exists(store.keys.log(registered), store.keys.worker(registered))
    sink.add(_record("later"))
    assert await sink.flush() is True  # the sink knows the network is gone
    assert not await raw.exists(store.keys.log(registered))


@pytest.mark.usefixtures("status_lines")
async def test_the_sink_writes_periodic_counts(store: Store, registered: str) -> None:
    counts = TaskCounts()
    sink = LogSink(store, registered, counts, flush_interval=0.01, status_every=0.02)
    async with anyio.create_task_group() as tg:
        sink.start(tg)
        counts.finished, counts.failed = 5, 1

        async def counted() -> bool:
            return any(r["event"] == "tasks so far" for r in await _read(store, registered))

        await eventually(counted, "a status line with the counts")
        tg.cancel_scope.cancel()
    await sink.close()
    row = next(r for r in await _read(store, registered) if r["event"] == "tasks so far")
    assert (row["finished"], row["failed"]) == (5, 1)


async def _read(store: Store, worker_id: str) -> list[dict[str, object]]:
    from rushpy.store.logs import read_logs

    return [e.record for e in await read_logs(store.workers, [worker_id]) if e.record]


def test_records_keep_structlog_fields_and_plain_messages() -> None:
    handler_records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handler_records.append(record)

    logger = logging.getLogger("tests.structured")
    logger.addHandler(keep := Keep())
    logger.setLevel(logging.INFO)
    try:
        get_logger("tests.structured").info("hello", n=3, obj=object(), big="x" * 10_000)
        logger.info("plain %s", "message")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(keep)
    broken_record = logging.LogRecord("t", logging.INFO, __file__, 1, "broken %d", ("text",), None)
    structured, plain, failed, broken = (to_record(r) for r in [*handler_records, broken_record])
    assert structured["event"] == "hello" and structured["n"] == 3 and structured["level"] == "info"
    assert structured["obj"].startswith("<object") and len(structured["big"]) == 8192
    assert plain["event"] == "plain message" and plain["logger"] == "tests.structured"
    assert "unformattable" in broken["event"]
    assert "ValueError: boom" in failed["exception"]


def test_cli_logging_shows_status_lines_at_the_default_level() -> None:
    status = logging.getLogger(STATUS_LOGGER)
    root, rushpy_logger = logging.getLogger(), logging.getLogger("rushpy")
    saved = (root.level, rushpy_logger.level, status.level, list(root.handlers))
    try:
        configure_cli_logging("warning")
        configure_cli_logging("warning")  # a second call adds no second handler
        assert status.getEffectiveLevel() == logging.INFO
        assert rushpy_logger.getEffectiveLevel() == logging.WARNING
        assert len(root.handlers) == len(saved[3]) + 1
        configure_cli_logging("debug")
        assert status.getEffectiveLevel() == logging.DEBUG
        configure_cli_logging("error")
        assert status.getEffectiveLevel() == logging.ERROR
    finally:
        root.setLevel(saved[0])
        rushpy_logger.setLevel(saved[1])
        status.setLevel(saved[2])
        root.handlers[:] = saved[3]


async def test_records_without_a_worker_context_go_to_the_only_sink(store: Store, registered: str) -> None:
    def emit() -> None:  # a thread of the application: no worker context
        thread = threading.Thread(target=logging.getLogger("tests.plain").warning, args=("plain thread",))
        thread.start()
        thread.join()

    logging.getLogger("tests.plain").setLevel(logging.WARNING)
    first = LogSink(store, registered, TaskCounts())
    await store.workers.register_worker("w2", {"pid": 2})
    second = LogSink(store, "w2", TaskCounts())
    async with anyio.create_task_group() as tg:
        first.start(tg)
        emit()
        assert first.buffered == 1  # the only sink takes it
        second.start(tg)
        emit()
        assert (first.buffered, second.buffered) == (1, 0)  # two sinks: neither
        tg.cancel_scope.cancel()
    await second.close()
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.close)  # closed from another task than the one that started it
    assert [r["event"] for r in await _read(store, registered)] == ["plain thread"]


async def test_damaged_log_entries_are_skipped_and_odd_fields_renamed(
    store: Store, registered: str, raw: redis.asyncio.Redis, config: RedisConfig, network_id: str
) -> None:
    from rushpy.codec import encode

    log_key = store.keys.log(registered)
    await raw.xadd(log_key, {"r": b"\xc1"})  # not msgpack
    await raw.xadd(log_key, {"other": b"1"})  # not a rushpy record
    await raw.xadd(log_key, {"r": encode([1, 2])})  # not a mapping
    await raw.xadd(log_key, {"r": encode({"ts": "soon", "event": "odd", "worker_id": "me", "level": "info"})})
    await store.workers.register_worker("w-bad", {"pid": 2})
    await raw.set(store.keys.log("w-bad"), b"not a stream")
    async with Controller(network_id, config=config) as rush:
        [row] = await rush.read_log()
        assert row["event"] == "odd" and row["field.worker_id"] == "me"
        assert row["timestamp"] == dt.datetime.fromtimestamp(0, dt.UTC)
        assert await rush.print_log(file=io.StringIO()) == 1


@pytest.mark.usefixtures("status_lines")
async def test_default_stop_reasons_and_requeued_failures_are_logged(
    controller: Controller, config: RedisConfig, network_id: str
) -> None:
    [key] = await controller.push_tasks([{"x": 1}], max_retries=1)
    async with Worker(network_id, config) as first:
        task = await first.pop_task()
        assert task is not None
        await first.fail_tasks([key], ["try again"])
        first.set_terminated()
    async with Worker(network_id, config) as second:
        second.set_killed()
    rows = await controller.read_log()
    requeued = next(r for r in rows if r["event"].startswith("task failed"))
    assert requeued["event"] == "task failed, re-queued (attempts left)" and requeued["key"] == key
    stopped = {r["worker_id"]: r for r in rows if r["event"] == "worker stopped"}
    assert (stopped[first.worker_id]["state"], stopped[first.worker_id]["reason"]) == (
        "terminated",
        "set_terminated() was called",
    )
    assert (stopped[second.worker_id]["state"], stopped[second.worker_id]["reason"]) == (
        "killed",
        "set_killed() was called",
    )


class _Meddling(dict[str, Any]):
    """Fields whose reading (inside a write's WATCH window) changes the worker's hash from elsewhere."""

    def __init__(self, url: str, key: str, times: int) -> None:
        super().__init__(note="x")
        self._url = url
        self._key = key
        self.times = times

    def items(self) -> Any:
        if self.times:
            self.times -= 1
            with redis.Redis.from_url(self._url) as client:  # another connection, synchronously
                client.hset(self._key, "meddled", b"\xc3")  # msgpack True
        return super().items()


async def test_a_write_that_races_a_change_of_the_worker_hash_is_repeated(
    store: Store, registered: str, config: RedisConfig, raw: redis.asyncio.Redis
) -> None:
    from rushpy.store.logs import LogWrite, append_log, set_fields_if_registered

    url, key = config.to_url(include_password=True), store.keys.worker(registered)
    once = _Meddling(url, key, times=1)
    assert await append_log(store.workers, registered, LogWrite(fields=once)) is False
    assert not await raw.hexists(key, "note")  # the transaction was dropped whole
    assert await set_fields_if_registered(store.workers, registered, _Meddling(url, key, times=1))
    assert await raw.hexists(key, "note")
    assert not await set_fields_if_registered(store.workers, registered, _Meddling(url, key, times=3))
