"""RowColumns.append_rows: packed rows (rushpy.stored_rows) give exactly the rows their hashes give."""

from __future__ import annotations

import gc
import random
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
import redis.asyncio

from rushpy import Controller, RedisConfig
from rushpy import columns as columns_module
from rushpy.codec import encode
from rushpy.column_batch import gc_paused
from rushpy.columns import RowColumns
from rushpy.errors import RushError
from rushpy.stored_rows import ROW_SLOTS, UNREADABLE, pack_row, unpack_row, unpack_rows
from rushpy.table import Table
from tests.test_columns import NOW, SEED, _cases, _expected, _key, _ts


def _pairs(flat: Any) -> dict[str, bytes]:
    return {bytes(n).decode(): bytes(v) for n, v in zip(flat[::2], flat[1::2], strict=True)}


def _as_rows(keys: list[str], hashes: list[Any]) -> tuple[list[str], list[bytes], list[Any]]:
    """The tasks of ``hashes`` that a row can hold, packed, with the flat hash each stands for."""
    kept_keys, rows, flats = [], [], []
    for key, flat in zip(keys, hashes, strict=True):
        if not flat or isinstance(flat, bytes):
            continue  # gone or not a hash: never a row
        try:
            fields = _pairs(flat)
        except UnicodeDecodeError:
            continue  # a field name that is not UTF-8 cannot be packed by name
        kept_keys.append(key)
        rows.append(pack_row(fields))
        flats.append(flat)
    return kept_keys, rows, flats


def _small_row(i: int, **fields: bytes) -> dict[str, bytes]:
    base = {
        "xs": encode({"x": i}),
        "ys": encode({"y": i}),
        "worker_id": encode(f"w-{i % 3}"),
        "created_at": _ts(NOW),
        "started_at": _ts(NOW),
        "finished_at": _ts(NOW),
        "attempts": encode(1),
        "claim": encode(f"{i:016x}"),
    }
    return base | fields


@pytest.mark.parametrize("b64", [True, False], ids=["base64-keys", "hex-keys"])
def test_packed_rows_equal_their_hashes_on_every_kind_of_task(b64: bool) -> None:
    """Damaged, unusual and intact tasks of every kind: the same rows, the same types, as few dicts."""
    keys, rows, flats = _as_rows(*_cases(1500, b64))
    by_rows, by_hashes = RowColumns("finished"), RowColumns("finished")
    added = 0
    for start in range(0, len(keys), 250):  # in batches, as the cache reads them
        added += by_rows.append_rows(keys[start : start + 250], rows[start : start + 250])
        by_hashes.append(keys[start : start + 250], flats[start : start + 250])
    expected = _expected(keys, flats)
    assert added == len(by_rows) == len(expected)
    assert by_rows.rows() == expected
    for got, want in zip(by_rows.rows(), expected, strict=True):
        assert list(got) == list(want)
        assert [type(v) for v in got.values()] == [type(v) for v in want.values()]
    assert by_rows.keys() == [row["key"] for row in expected]
    assert by_rows.n_odd == by_hashes.n_odd  # rows are as columnar as hashes
    rows_table, hashes_table = Table.over(by_rows), Table.over(by_hashes)
    assert rows_table.columns == hashes_table.columns
    for column in rows_table.columns:  # read column by column, without row dicts
        assert rows_table[column] == hashes_table[column]


def test_the_usual_rows_are_read_in_bulk_without_being_made_flat() -> None:
    rows = [pack_row(_small_row(i)) for i in range(20)]
    shapes, items = unpack_rows(rows)
    assert shapes == [(bytes,) * 8] * 20
    assert items[3] == [v for v in _small_row(3).values()]


def test_rows_with_absent_slots_stay_columnar() -> None:
    """Tasks pushed finished have no worker: their rows have holes (False), read in bulk too."""
    rng = random.Random(SEED)
    keys = [_key(rng, True) for _ in range(30)]
    fields = [_small_row(i) for i in range(30)]
    for i, f in enumerate(fields):
        if i % 2:
            del f["worker_id"], f["started_at"], f["attempts"], f["claim"]
    rows = [pack_row(f) for f in fields]
    shapes, _ = unpack_rows(rows)
    assert shapes[1] == (bytes, bytes, bool, bytes, bool, bytes)
    cols = RowColumns("finished")
    cols.append_rows(keys, rows)
    flats = [[b for n, v in f.items() for b in (n.encode(), v)] for f in fields]
    assert cols.rows() == _expected(keys, flats)
    assert cols.n_odd == 0
    assert Table.over(cols)["worker_id"][:2] == ["w-0", None]


def test_rows_with_fields_beyond_the_slots_stay_columnar() -> None:
    rng = random.Random(SEED)
    keys = [_key(rng, True) for _ in range(10)]
    fields = [_small_row(i, note=encode("kept")) for i in range(10)]
    rows = [pack_row(f) for f in fields]
    shapes, _ = unpack_rows(rows)
    assert shapes == [None] * 10  # made flat first
    cols = RowColumns("finished")
    cols.append_rows(keys, rows)
    assert cols.n_odd == 0
    assert Table.over(cols)["y"] == list(range(10))


@pytest.mark.parametrize(
    "bad",
    [
        b"\xc1garbage",  # not msgpack: every row of the batch is read one by one
        msgpack.packb(5),  # msgpack, but not a row
        msgpack.packb(b"12345678"),  # msgpack with a length, but not a row
        msgpack.packb([b"x"] * (len(ROW_SLOTS) + 1)),  # an odd number of extra items
        msgpack.packb([True, b"x"]),  # a slot holding True
        msgpack.packb([[1], b"x"]),  # a slot holding a list
    ],
    ids=["not-msgpack", "not-a-list", "bytes", "odd-extras", "true-slot", "list-slot"],
)
def test_a_bad_row_is_one_damaged_task_among_good_ones(bad: bytes) -> None:
    rng = random.Random(SEED)
    keys = [_key(rng, True) for _ in range(9)]
    rows = [pack_row(_small_row(i)) for i in range(9)]
    rows[4] = bad
    cols = RowColumns("finished")
    assert cols.append_rows(keys, rows) == 9
    table = Table.over(cols)
    assert [y for i, y in enumerate(table["y"]) if i != 4] == [i for i in range(9) if i != 4]
    damaged = cols.row(4)
    assert damaged["key"] == keys[4]
    assert f"field '{UNREADABLE.decode()}'" in damaged["error"]
    assert cols.n_odd == 1


def test_a_bad_value_in_a_good_row_names_its_field() -> None:
    rng = random.Random(SEED)
    keys = [_key(rng, True) for _ in range(6)]
    rows = [pack_row(_small_row(i)) for i in range(6)]
    rows[2] = pack_row(_small_row(2, ys=b"\xc1"))
    rows[3] = pack_row(_small_row(3, claim=b"\xb0" + b"\xff" * 16))  # found by the check after the batch
    cols = RowColumns("finished")
    cols.append_rows(keys, rows)
    assert "field 'ys'" in cols.row(2)["error"]
    assert "field 'claim'" in cols.row(3)["error"]
    assert [cols.row(i)["y"] for i in (0, 1, 4, 5)] == [0, 1, 4, 5]
    assert cols.n_odd == 2


def test_append_rows_takes_one_row_per_key() -> None:
    with pytest.raises(ValueError, match="2 keys but 1 rows"):
        RowColumns("finished").append_rows(["a", "b"], [pack_row(_small_row(0))])


async def test_a_cold_fetch_reads_rows_and_hashes_of_an_earlier_version_in_order(
    controller: Controller, raw: redis.asyncio.Redis, config: RedisConfig
) -> None:
    """Finished tasks stored as hashes (before rows existed) or of another type sit among rows."""
    keys = await controller.push_finished_tasks([{"x": i} for i in range(8)], [{"y": i} for i in range(8)])
    rows_key = controller._keys.rows
    for i in (2, 3, 6):  # as an earlier version stored them: one hash per task
        fields = _pairs(unpack_row(await raw.hget(rows_key, keys[i])))
        await raw.hset(controller._keys.task(keys[i]), mapping=fields)
        await raw.hdel(rows_key, keys[i])
    await raw.hdel(rows_key, keys[7])
    await raw.rpush(controller._keys.task(keys[7]), b"not a task")  # a key of another type
    async with Controller(controller.network_id, config=config) as fresh:
        table = await fresh.fetch_finished_tasks()
    assert table["key"] == keys
    assert table["y"][:7] == list(range(7))
    assert "list" in table.rows[7]["error"]


async def test_a_rows_key_of_the_wrong_type_fails_a_read_with_a_rushpy_error(
    controller: Controller, raw: redis.asyncio.Redis, config: RedisConfig
) -> None:
    await controller.push_finished_tasks([{"x": 1}], [{"y": 1}])
    await raw.delete(controller._keys.rows)
    await raw.set(controller._keys.rows, b"garbage")
    async with Controller(controller.network_id, config=config) as fresh:
        with pytest.raises(RushError, match="holds a string, not a hash"):
            await fresh.fetch_finished_tasks()


@pytest.mark.parametrize("enabled", [True, False], ids=["collector-on", "collector-off"])
def test_a_bulk_append_pauses_the_garbage_collector_and_restores_it(
    enabled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []

    def watched(rows: Any) -> Any:
        seen.append(gc.isenabled())
        return unpack_rows(rows)

    monkeypatch.setattr(columns_module, "unpack_rows", watched)
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        RowColumns("finished").append_rows(["a" * 16, "b" * 16], [pack_row(_small_row(i)) for i in range(2)])
        assert seen == [False] and gc.isenabled() is enabled
        with pytest.raises(RuntimeError), gc_paused():
            raise RuntimeError("a failure inside")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
