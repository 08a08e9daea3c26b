"""Export and import of a whole network; the server's snapshot policy and INFO."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
import redis.asyncio
from pydantic import SecretStr

from rushpy import Controller, EmbeddedServer, RedisConfig, Worker
from rushpy.archive import FORMAT, VERSION
from rushpy.codec import encode
from rushpy.errors import ConfigError, ServerError


async def _build(rush: Controller, raw: redis.asyncio.Redis, config: RedisConfig) -> dict[str, Any]:
    """A network with tasks in every state, workers in two states, constants, objects, start args."""
    net = rush.network_id
    k = rush._session.keys
    done = await rush.push_tasks([{"x": i} for i in range(5)], max_retries=1)
    failed = await rush.push_tasks([{"x": 10}])
    async with Worker(net, config) as first:
        for key in done:
            task = await first.pop_task()
            assert task is not None and task.key == key
            await first.finish_tasks([key], [{"y": task.xs["x"] * 2}])
        task = await first.pop_task()
        assert task is not None and task.key == failed[0]
        await first.fail_tasks([task.key], [ValueError("bad x")])
    queued = await rush.push_tasks([{"x": 20}, {"x": 21}])
    running_worker = Worker(net, config)
    await running_worker.__aenter__()
    running = await running_worker.pop_task()
    assert running is not None and running.key == queued[0]
    await raw.hset(k.constants, "c", encode({"scale": 2}))
    await raw.set(k.object("d1"), encode([1, 2, 3]))
    await raw.sadd(k.objects, "d1")
    await raw.set(k.start_args, encode({"fun": "os:system"}))
    return {
        "done": done,
        "failed": failed,
        "queued": queued[1:],
        "running": [running.key],
        "running_worker": running_worker,
        "first": first.worker_id,
    }


def _comparable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "state"}


async def test_a_network_moves_to_another_server_with_states_results_and_history(
    controller: Controller, raw: redis.asyncio.Redis, config: RedisConfig, tmp_path: Path
) -> None:
    built = await _build(controller, raw, config)
    try:
        before = {r["key"]: r for r in await controller.fetch_tasks()}
        finish_order = (await controller.fetch_finished_tasks())["key"]
        summary = await controller.export_network(tmp_path / "study.rush")
        assert (summary.n_tasks, summary.n_workers, summary.start_args) == (8, 2, True)
        assert summary.states == {"finished": 5, "failed": 1, "queued": 1, "running": 1}
    finally:
        await built["running_worker"].__aexit__(None, None, None)
    async with EmbeddedServer() as other, Controller("copy", config=other.config) as copy:
        imported = await copy.import_network(tmp_path / "study.rush")
        assert (imported.n_tasks, imported.n_workers, imported.skipped) == (8, 2, 0)
        assert imported.network_id == controller.network_id and imported.start_args
        after = {r["key"]: r for r in await copy.fetch_tasks()}
        assert after.keys() == before.keys()
        for key, row in before.items():
            assert _comparable(after[key]) == _comparable(row), key
        assert {after[k]["state"] for k in built["done"]} == {"finished"}
        assert after[built["failed"][0]]["condition"]["message"] == "bad x"
        # Nothing runs the running task here: it is queued again, its attempt counted.
        assert {after[k]["state"] for k in built["queued"] + built["running"]} == {"queued"}
        assert after[built["running"][0]]["attempts"] == 1
        assert (await copy.fetch_finished_tasks())["key"] == finish_order
        states = {r["worker_id"]: r["state"] for r in await copy.worker_info()}
        assert states[built["first"]] == "terminated"
        assert states[built["running_worker"].worker_id] == "lost"
        other_raw = redis.asyncio.Redis.from_url(other.config.to_url(include_password=True))
        try:
            k = copy._session.keys
            assert not await other_raw.exists(k.start_args)  # never imported: it names code to run
            assert await other_raw.hget(k.constants, "c") == encode({"scale": 2})
            assert await other_raw.get(k.object("d1")) == encode([1, 2, 3])
        finally:
            await other_raw.aclose()
        # The re-queued tasks run in the new network.
        async with Worker("copy", other.config) as worker:
            popped = [await worker.pop_task() for _ in range(2)]
        assert sorted(t.key for t in popped if t) == sorted(built["queued"] + built["running"])
        await copy.reset()


async def test_import_into_a_network_with_tasks_needs_merge(
    controller: Controller, config: RedisConfig, network_id: str, tmp_path: Path
) -> None:
    keys = await controller.push_tasks([{"x": 1}, {"x": 2}])
    async with Worker(network_id, config) as worker:
        pass
    await controller.export_network(tmp_path / "a.rush.gz")
    with gzip.open(tmp_path / "a.rush.gz") as f:
        assert msgpack.Unpacker(f, raw=False).unpack()["format"] == FORMAT  # really compressed
    with pytest.raises(ConfigError, match="merge=True"):
        await controller.import_network(tmp_path / "a.rush.gz")
    extra = await controller.push_tasks([{"x": 3}])
    await controller.export_network(tmp_path / "b.rush")
    await controller.reset()
    await controller.push_tasks([{"x": 9}])
    await controller.import_network(tmp_path / "a.rush.gz", merge=True)
    merged = await controller.import_network(tmp_path / "b.rush", merge=True)
    # The tasks and the worker of a.rush exist already.
    assert (merged.n_tasks, merged.n_workers, merged.skipped) == (1, 0, 3)
    rows = await controller.fetch_tasks()
    assert len(rows) == 4 and set(keys + extra) <= set(rows["key"])
    assert (await controller.worker_info())["worker_id"] == [worker.worker_id]


def _write(path: Path, *records: Any) -> Path:
    with open(path, "wb") as f:
        for record in records:
            f.write(msgpack.packb(record, use_bin_type=True))
    return path


HEADER = {"format": FORMAT, "version": VERSION, "network_id": "n", "prefix": "rush"}


@pytest.mark.parametrize(
    ("records", "match"),
    [
        ([{"hello": 1}], "not a rushpy network archive"),
        ([{**HEADER, "version": VERSION + 1}], "version"),
        ([HEADER, {"kind": "tasks", "tasks": []}], "truncated"),
        ([HEADER, [1, 2]], "not part of a rushpy archive"),
    ],
    ids=["no-header", "version", "truncated", "garbage"],
)
async def test_bad_archives_are_refused_before_anything_is_written(
    controller: Controller, tmp_path: Path, records: list[Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        await controller.import_network(_write(tmp_path / "bad.rush", *records))
    assert await controller.n_tasks() == 0


async def test_unreadable_files_are_refused(controller: Controller, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        await controller.import_network(tmp_path / "missing.rush")
    (tmp_path / "junk.rush").write_bytes(msgpack.packb(HEADER) + b"\xc1")  # never valid msgpack
    with pytest.raises(ConfigError, match="cannot read"):
        await controller.import_network(tmp_path / "junk.rush")
    (tmp_path / "cut.rush").write_bytes(msgpack.packb(HEADER) + b"\x92\x01")  # ends mid-record
    with pytest.raises(ConfigError, match="truncated"):
        await controller.import_network(tmp_path / "cut.rush")


async def test_an_archive_with_a_bare_end_imports_nothing(controller: Controller, tmp_path: Path) -> None:
    path = _write(tmp_path / "empty.rush", HEADER, {"kind": "end", "n_tasks": 0, "n_workers": 0})
    summary = await controller.import_network(path)
    assert (summary.n_tasks, summary.n_workers, summary.start_args) == (0, 0, False)


# -- the server: snapshot policy and INFO ---------------------------------------------------
@pytest.fixture
async def private() -> AsyncIterator[EmbeddedServer]:
    """A server of these tests only: its save policy and users change."""
    async with EmbeddedServer(password="info-secret") as server:
        yield server


async def test_snapshot_schedule_sets_the_save_policy(private: EmbeddedServer) -> None:
    admin = redis.asyncio.Redis.from_url(private.config.to_url(include_password=True), decode_responses=True)
    try:
        async with Controller("snap", config=private.config) as rush:
            await rush.snapshot_schedule(300, 10)
            assert (await admin.config_get("save"))["save"] == "300 10"
            await rush.snapshot_schedule([(3600, 1), (60, 1000)])
            assert (await admin.config_get("save"))["save"] == "3600 1 60 1000"
            await rush.snapshot_schedule(None)
            assert (await admin.config_get("save"))["save"] == ""
            for bad in ((0, 1), (10, -1)):
                with pytest.raises(ConfigError, match="snapshot rule"):
                    await rush.snapshot_schedule(*bad)
            with pytest.raises(ConfigError, match="seconds"):
                await rush.snapshot_schedule("often")  # type: ignore[arg-type]
            info = await rush.redis_info()
        assert {"server", "memory", "persistence", "keyspace"} <= info.keys()
        assert info["server"]["tcp_port"] == private.port
        assert "info-secret" not in repr(info)
        await admin.acl_setuser(
            "limited",
            enabled=True,
            passwords=["+limited-pw"],
            keys=["*"],
            channels=["*"],
            commands=["+@all", "-config", "-info"],
        )
        limited = private.config.model_copy(
            update={"username": "limited", "password": SecretStr("limited-pw")}
        )
        async with Controller("snap", config=limited) as rush:
            with pytest.raises(ServerError, match="configuration file"):
                await rush.snapshot_schedule(300, 10)
            assert await rush.redis_info() == {}  # every section refused: none shown
    finally:
        await admin.aclose()


async def test_keys_without_a_hash_or_a_state_are_left_out(
    controller: Controller, raw: redis.asyncio.Redis, tmp_path: Path
) -> None:
    k = controller._session.keys
    [key] = await controller.push_tasks([{"x": 1}])
    await raw.rpush(k.all_tasks, "no-state")  # listed, in no state
    await raw.rpush(k.queued, "no-hash")  # queued, without a hash
    summary = await controller.export_network(tmp_path / "odd.rush")
    assert (summary.n_tasks, summary.states) == (1, {"queued": 1})
    await controller.reset()
    await controller.import_network(tmp_path / "odd.rush")
    assert (await controller.fetch_tasks())["key"] == [key]
