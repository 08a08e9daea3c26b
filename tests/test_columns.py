"""The columnar row store (rushpy.columns) gives exactly the rows of the dict cache.

Every comparison is against ``flatten_task(key, state, decode_task(flat))``,
what the controller's cache kept per row before: a seeded generator builds
many shapes of stored hashes (the kinds of bad data of test_corrupt_data.py
and test_fuzz_corruption.py included), and a lazy ``Table.over`` must behave
like a ``Table`` of those dicts.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import random
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from rushpy import Controller
from rushpy.codec import encode
from rushpy.columns import RowColumns
from rushpy.fields import decode_task
from rushpy.table import Table, flatten_task

SEED = 20261201
NOW = dt.datetime(2026, 12, 1, 5, 40, 12, 345678, tzinfo=dt.UTC)


def _ts(when: dt.datetime) -> bytes:
    return encode(when)


def _key(rng: random.Random, b64: bool = False) -> str:
    if b64:  # rushpy's keys: 12 random bytes as 16 base64url characters
        return base64.urlsafe_b64encode(rng.randbytes(12)).decode()
    return "".join(rng.choice("0123456789abcdef") for _ in range(32))  # earlier versions' keys


NAMES = ["x", "y", "key", "state", "seed", "error", "condition", "worker_id", "attempts", "stdout", "ys.y"]
VALUES: list[Any] = [
    0,
    -7,
    2**40,
    1.5,
    "text",
    None,
    True,
    b"\x00raw",
    [1, [2, 3]],
    {"nested": {"a": 1}},
    dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    dt.datetime(2020, 1, 2, 3, 4, 5),
    dt.date(2021, 5, 6),
    decimal.Decimal("1.25"),
]


def _group(rng: random.Random) -> dict[str, Any]:
    return {name: rng.choice(VALUES) for name in rng.sample(NAMES, rng.randint(0, 4))}


def _good_fields(rng: random.Random) -> dict[str, bytes]:
    """The stored fields of an intact task of a random kind (finished, failed, pushed, relayed)."""
    fields = {"created_at": _ts(NOW), "xs": encode(_group(rng))}
    if rng.random() < 0.8:
        fields["worker_id"] = encode(rng.choice(["w-1", "w-2", "host-abc"]))
        fields["started_at"] = _ts(NOW + dt.timedelta(microseconds=rng.randint(0, 10**6)))
        fields["attempts"] = encode(rng.randint(1, 3))
        fields["claim"] = encode(f"{rng.getrandbits(64):016x}")
    if rng.random() < 0.7:
        ys: Any = _group(rng)
        if rng.random() < 0.1:
            ys = {1: "int key", "y": 2}  # a worker loop may return other keys
        fields["ys"] = encode(ys)
        fields["done"] = encode(f"{rng.getrandbits(64):016x}")
    else:
        condition: dict[str, Any] = {"type": "ValueError", "message": "boom"}
        if rng.random() < 0.5:
            condition |= {"stdout": "printed\n", "warnings": [{"message": "w"}]}
        fields["condition"] = encode(condition)
        fields["conditions"] = encode(rng.choice([[condition], {}]))
    # Whole seconds are stored in the 32-bit timestamp format.
    fields["finished_at"] = _ts(NOW.replace(microsecond=rng.choice([0, 1, 999999])))
    for name, value in (("xs_extra", _group(rng)), ("seed", 2**63 + 5), ("timeout", 2.5), ("max_retries", 2)):
        if rng.random() < 0.3:
            fields[name] = encode(value)
    if rng.random() < 0.2:
        fields["ys_extra"] = encode({"stdout": "out", "warnings": [], "extra": 1})
    if rng.random() < 0.1:
        fields["unknown_field"] = encode([1, 2])
    return fields


BAD: list[tuple[str, bytes]] = [
    ("xs", b"\xc1"),  # never-used msgpack byte
    ("xs", encode([1, 2])),
    ("xs", encode({1: 2})),
    ("ys", encode("not a map")),
    ("ys", b"\x81\xa1y"),  # truncated
    ("xs_extra", encode(3)),
    ("worker_id", encode(5)),
    ("attempts", encode(-1)),
    ("attempts", encode("one")),
    ("max_retries", encode(1.5)),
    ("timeout", encode(0)),
    ("seed", encode(-1)),
    ("condition", encode({"type": "x"})),
    ("conditions", encode(3)),
    ("created_at", encode(1.0)),  # a float, not a datetime
    ("started_at", encode("yesterday")),
    ("finished_at", b""),
    ("unknown_field", b"\xc1"),
    ("claim", b"\xb0" + b"\xff" * 16),  # a 16-byte string that is not UTF-8
    ("xs", msgpack.packb({"x": msgpack.ExtType(1, b"not a date")})),  # rushpy's extension, unreadable
    ("finished_at", b"\xd7\xff" + ((10**9 << 34) | 1_700_000_000).to_bytes(8, "big")),  # nanoseconds >= 1e9
    ("xs", b""),
]

ODD_BUT_GOOD: list[tuple[str, bytes]] = [
    ("created_at", encode(dt.datetime(2020, 1, 1, 12, 0, 0, 5))),  # naive datetime (extension type)
    ("started_at", encode(dt.datetime(1960, 1, 1, tzinfo=dt.UTC))),  # 96-bit timestamp
    ("finished_at", b"\xd7\xff" + ((1500 << 34) | 1_700_000_000).to_bytes(8, "big")),  # nanoseconds
    ("xs", encode({(1, 2): "tuple key"})),  # valid msgpack, but a key that is not a string
    ("ys", msgpack.packb({(1, 2): [3]}, use_bin_type=True)),  # a list key comes back as a tuple
]


def _flat(fields: dict[str, bytes], rng: random.Random) -> list[bytes]:
    items = list(fields.items())
    rng.shuffle(items)  # field order differs between small and large hashes
    return [b for name, raw in items for b in (name.encode(), raw)]


def _cases(n: int, b64: bool = False) -> tuple[list[str], list[Any]]:
    rng = random.Random(SEED)
    keys: list[str] = []
    hashes: list[Any] = []
    for i in range(n):
        fields = _good_fields(rng)
        roll = rng.random()
        if roll < 0.15:
            name, raw = rng.choice(BAD)
            fields[name] = raw
        elif roll < 0.25:
            name, raw = rng.choice(ODD_BUT_GOOD)
            fields[name] = raw
        flat: Any = _flat(fields, rng)
        if i % 97 == 0:
            flat = b"list"  # a task key of another Redis type
        elif i % 89 == 0:
            flat = [b"\xff\xfe", encode(1), *flat]  # a field name that is not UTF-8
        elif i % 83 == 0:
            flat = rng.choice([None, []])  # gone
        key = _key(rng, b64)
        if i % 61 == 0:
            other = _key(rng, not b64)  # the other format, kept aside
            key = rng.choice([key.upper(), "custom-key", key[:-1] + " ", key[:-2], key[:-1] + "+", other])
        keys.append(key)
        hashes.append(flat)
    return keys, hashes


def _expected(keys: list[str], hashes: list[Any], state: str = "finished") -> list[dict[str, Any]]:
    return [flatten_task(k, state, decode_task(h)) for k, h in zip(keys, hashes, strict=True) if h]


@pytest.mark.parametrize("b64", [True, False], ids=["base64-keys", "hex-keys"])
def test_rows_equal_the_dict_cache_on_every_kind_of_hash(b64: bool) -> None:
    keys, hashes = _cases(1500, b64)
    cols = RowColumns("finished")
    added = 0
    for start in range(0, len(keys), 250):  # appended in batches, as the cache does
        added += cols.append(keys[start : start + 250], hashes[start : start + 250])
    expected = _expected(keys, hashes)
    assert added == len(cols) == len(expected)
    assert cols.rows() == expected
    # The same types, not only equal values (a datetime is not equal to a float).
    for got, want in zip(cols.rows(), expected, strict=True):
        assert list(got) == list(want)
        assert [type(v) for v in got.values()] == [type(v) for v in want.values()]
    assert [cols.row(i) for i in (0, 7, -1)] == [expected[0], expected[7], expected[-1]]
    assert cols.keys() == [row["key"] for row in expected]
    # Most rows are columnar; the damaged and unusual ones are kept as dicts.
    assert 0 < cols.n_odd < len(cols) // 3


def test_lazy_table_behaves_like_a_table_of_dicts() -> None:
    keys, hashes = _cases(600, b64=True)
    cols = RowColumns("failed")
    cols.append(keys, hashes)
    dicts = Table(_expected(keys, hashes, "failed"))
    lazy = Table.over(cols)
    assert len(lazy) == len(dicts)
    assert lazy.columns == dicts.columns
    for name in dicts.columns:
        assert lazy[name] == dicts[name], name
    assert lazy.keys == dicts.keys
    assert lazy[3] == dicts[3] and lazy[-2] == dicts[-2]
    for part in (slice(10, 40), slice(None, 5), slice(-30, None), slice(50, 10), slice(0, 100, 7)):
        assert lazy[part] == dicts[part]
        assert lazy[part].columns == dicts[part].columns
        assert lazy[part].keys == dicts[part].keys
    assert Table.over(cols, 100, 200)["x"] == dicts["x"][100:200]
    assert lazy.format(max_rows=5) == dicts.format(max_rows=5)
    assert repr(lazy) == repr(dicts)
    assert lazy.to_records() == dicts.to_records()
    assert list(lazy) == list(dicts) and lazy.rows == dicts.rows
    assert lazy == dicts
    with pytest.raises(KeyError, match="no column 'nope'"):
        Table.over(cols)["nope"]
    with pytest.raises(IndexError):
        lazy[len(dicts)]


def test_lazy_table_converts_like_a_table_of_dicts() -> None:
    import pandas as pd  # in the test extra; optional for users

    rng = random.Random(SEED)
    keys = [_key(rng) for _ in range(50)]
    hashes: list[Any] = []
    for i in range(50):
        fields = {"created_at": _ts(NOW), "xs": encode({"x": i, "s": str(i)}), "ys": encode({"y": i / 3})}
        hashes.append(_flat(fields, rng))
    cols = RowColumns("finished")
    cols.append(keys, hashes)
    dicts = Table(_expected(keys, hashes))
    pd.testing.assert_frame_equal(Table.over(cols).to_pandas(), dicts.to_pandas())
    assert Table.over(cols).to_polars().equals(dicts.to_polars())
    assert Table.over(RowColumns("finished")).to_polars().equals(Table().to_polars())
    assert Table.over(RowColumns("finished")).columns == [] and len(Table.over(RowColumns("finished"))) == 0


def test_a_column_is_read_without_building_row_dicts() -> None:
    rng = random.Random(SEED)
    keys = [_key(rng, b64=True) for _ in range(200)]
    hashes = [
        _flat({"xs": encode({"x": i}), "ys": encode({"y": i * i}), "worker_id": encode("w")}, rng)
        for i in range(200)
    ]
    hashes[5] = _flat({"xs": b"\xc1", "ys": encode({"y": 25})}, rng)  # corrupt inputs
    cols = RowColumns("finished")
    cols.append(keys, hashes)
    table = Table.over(cols)
    assert table["y"] == [i * i for i in range(200)]
    assert table["x"][4:7] == [4, None, 6]
    assert table["error"][5].startswith("field 'xs' is not valid msgpack")
    assert table["worker_id"][:2] == ["w", "w"] and table["worker_id"][5] is None
    assert table["state"][0] == "finished" and table["key"] == keys == table.keys
    # Structure, not size: one dict for the damaged row only, and the table built none.
    assert cols.n_odd == 1
    assert table._rows is None  # the lazy table has materialised nothing


def test_rows_of_a_range_appended_later_are_not_in_an_earlier_table() -> None:
    rng = random.Random(SEED)
    cols = RowColumns("finished")
    cols.append([_key(rng)], [_flat({"xs": encode({"x": 1})}, rng)])
    table = Table.over(cols)
    cols.append([_key(rng)], [_flat({"xs": encode({"x": 2})}, rng)])
    assert len(table) == 1 and table["x"] == [1] and len(Table.over(cols)) == 2


def test_append_takes_one_hash_per_key() -> None:
    with pytest.raises(ValueError, match="got 2 keys but 1 hashes"):
        RowColumns("finished").append(["a", "b"], [None])


def test_row_index_out_of_range() -> None:
    with pytest.raises(IndexError, match="row 0 out of range for 0 rows"):
        RowColumns("finished").row(0)


def test_many_fields_in_one_row() -> None:
    # More stored fields than a one-byte msgpack array header holds, and a wide group.
    rng = random.Random(SEED)
    fields = {name: encode(v) for name, v in [("xs", {f"p{i}": i for i in range(100)}), ("ys", {"y": 1})]}
    fields |= {"xs_extra": encode({"a": 1}), "ys_extra": encode({"b": 2}), "attempts": encode(1)}
    fields |= {"max_retries": encode(3), "timeout": encode(1.0), "seed": encode(7)}
    fields |= {"condition": encode({"message": "m"}), "conditions": encode([])}
    keys = [_key(rng) for _ in range(20)]
    hashes = [_flat(fields, rng) for _ in keys]
    cols = RowColumns("finished")
    cols.append(keys, hashes)
    assert cols.rows() == _expected(keys, hashes) and cols.n_odd == 0
    assert Table.over(cols)["p99"] == [99] * 20


async def test_raw_read_of_a_live_network_gives_the_cached_rows(controller: Controller) -> None:
    store = controller._store  # the store the cache reads through
    keys = await controller.push_finished_tasks(
        [{"x": i} for i in range(2500)], [{"y": i} for i in range(2500)]
    )
    await store.client.hdel(store.keys.rows, keys[3], keys[4])  # gone: no row
    await store.client.rpush(store.keys.tasks([keys[4]])[0], "x")  # another Redis type
    assert await store.reads.read_raw([]) == []
    raw = await store.reads.read_raw(keys)
    assert len(raw) == len(keys)
    cols = RowColumns("finished")
    assert cols.append(keys, raw) == len(keys) - 1
    decoded = await store.reads.read_tasks(keys)
    assert cols.rows() == [flatten_task(k, "finished", t) for k, t in zip(keys, decoded, strict=True) if t]
    assert Table.over(cols)["y"][:3] == [0, 1, 2]


def test_timestamps_in_both_msgpack_formats_stay_columnar() -> None:
    rng = random.Random(SEED)
    # 32-bit and 64-bit timestamp formats; 999,999 µs is near the nanosecond limit msgpack checks.
    whole, micro = NOW.replace(microsecond=0), NOW.replace(microsecond=999_999)
    keys = [_key(rng) for _ in range(4)]
    hashes = [
        _flat({"xs": encode({"x": 1}), "created_at": _ts(t), "finished_at": _ts(t)}, rng)
        for t in (whole, micro) * 2
    ]
    cols = RowColumns("finished")
    cols.append(keys, hashes)
    assert cols.n_odd == 0
    assert cols.rows() == _expected(keys, hashes)
    assert Table.over(cols)["finished_at"] == [whole, micro] * 2


def test_an_empty_store_has_no_rows() -> None:
    cols = RowColumns("finished")
    assert cols.rows() == [] and cols.keys() == [] and cols.columns() == [] and len(cols) == 0
    rng = random.Random(SEED)
    cols.append([_key(rng)], [_flat({"xs": encode({"x": 1})}, rng)])
    assert cols.column("x", 0, 0) == [] and cols.column("x", 1) == [] and cols.column("x") == [1]


def test_a_run_of_one_layout_with_bad_and_unusual_rows() -> None:
    # Hashes with the same field order are checked in bulk; each odd one must still come out right.
    rng = random.Random(SEED)
    keys = [_key(rng) for _ in range(50)]
    hashes: list[Any] = []
    for i in range(50):
        fields = {
            "created_at": _ts(NOW),
            "xs": encode({"x": i}),
            "worker_id": encode(f"w-{i % 3}"),
            "claim": encode(f"{i:016x}"),
            "finished_at": _ts(NOW),
            "ys": encode({"y": i}),
        }
        if i == 10:
            fields["claim"] = b"\xb0" + b"\xff" * 16  # not UTF-8: damaged
        elif i == 20:
            fields["finished_at"] = _ts(NOW.replace(microsecond=0))  # 32-bit timestamp: fine
        elif i == 30:
            fields["worker_id"] = encode(7)  # damaged
        elif i == 40:
            fields["ys"] = msgpack.packb({(1, 2): 3, "y": 40}, use_bin_type=True)  # list key: fine
        elif i == 45:
            fields["claim"] = encode("é" * 8)  # 16 bytes, not ASCII, valid
        hashes.append([b for name, raw in fields.items() for b in (name.encode(), raw)])
    cols = RowColumns("finished")
    cols.append(keys, hashes)
    assert cols.rows() == _expected(keys, hashes)
    assert cols.n_odd == 2
    table = Table.over(cols)
    assert table["y"] == list(range(50)) and table["(1, 2)"][40] == 3 and table["(1, 2)"][39] is None
    assert table["worker_id"][:3] == ["w-0", "w-1", "w-2"] and table["worker_id"][30] is None
