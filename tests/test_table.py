"""Table: rows, columns, indexing, conversion, formatting; flatten_task."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import polars as pl
import pytest

from rushpy import Table
from rushpy.table import RESERVED_COLUMNS, flatten_task

T0 = dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)


def sample() -> Table:
    return Table(
        [
            {"key": "k1", "state": "finished", "worker_id": "w1", "x": 1, "y": 1.5},
            {"key": "k2", "state": "finished", "worker_id": "w2", "x": 2, "y": 4.0},
            {"key": "k3", "state": "failed", "worker_id": "w1", "x": 3, "condition": {"type": "E"}},
        ]
    )


# -- basics -----------------------------------------------------------------------------------


def test_rows_columns_keys() -> None:
    table = sample()
    assert len(table) == 3
    assert table.columns == ["key", "state", "worker_id", "x", "y", "condition"]
    assert table.keys == ["k1", "k2", "k3"]
    assert table.rows[0] == {"key": "k1", "state": "finished", "worker_id": "w1", "x": 1, "y": 1.5}
    assert [row["key"] for row in table] == ["k1", "k2", "k3"]


def test_columns_in_first_seen_order() -> None:
    table = Table([{"b": 1}, {"a": 2, "b": 3}, {"c": 4}])
    assert table.columns == ["b", "a", "c"]


def test_rows_and_columns_are_copies() -> None:
    table = sample()
    table.rows.clear()
    table.columns.clear()
    assert len(table) == 3
    assert len(table.columns) == 6


def test_input_list_is_copied() -> None:
    rows: list[dict[str, Any]] = [{"key": "a"}]
    table = Table(rows)
    rows.append({"key": "b"})
    assert table.keys == ["a"]


def test_empty_table() -> None:
    table = Table()
    assert len(table) == 0
    assert table.columns == []
    assert table.keys == []
    assert list(table) == []
    assert not table
    assert table.to_records() == []


# -- indexing ---------------------------------------------------------------------------------


def test_int_index() -> None:
    table = sample()
    assert table[0]["key"] == "k1"
    assert table[-1]["key"] == "k3"
    with pytest.raises(IndexError):
        table[3]


def test_slice_index() -> None:
    table = sample()
    head = table[:2]
    assert isinstance(head, Table)
    assert head.keys == ["k1", "k2"]
    assert head.columns == ["key", "state", "worker_id", "x", "y"]
    assert table[::-1].keys == ["k3", "k2", "k1"]
    empty = table[10:]
    assert isinstance(empty, Table)
    assert len(empty) == 0


def test_column_index_fills_missing_cells() -> None:
    table = sample()
    assert table["x"] == [1, 2, 3]
    assert table["y"] == [1.5, 4.0, None]
    assert table["condition"] == [None, None, {"type": "E"}]


def test_missing_column() -> None:
    table = sample()
    with pytest.raises(KeyError) as info:
        table["z"]
    message = str(info.value)
    assert "'z'" in message
    assert "'x'" in message  # lists the columns that do exist
    with pytest.raises(KeyError, match="no column"):
        Table()["y"]


def test_sequence_protocol() -> None:
    table = sample()
    assert table.index(table[1]) == 1
    assert table[1] in table
    assert next(reversed(table))["key"] == "k3"


def test_equality() -> None:
    assert sample() == sample()
    assert sample() != sample()[:2]
    assert sample() != sample().rows  # a list of rows is not a Table
    with pytest.raises(TypeError):
        hash(sample())


def test_repr() -> None:
    text = repr(sample())
    assert "3 rows" in text
    assert "'condition'" in text


def test_to_records_fills_every_column() -> None:
    records = sample().to_records()
    assert all(list(r) == sample().columns for r in records)
    assert records[2]["y"] is None
    assert records[0]["condition"] is None


# -- pandas / polars --------------------------------------------------------------------------


def test_to_pandas() -> None:
    table = sample()
    frame = table.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == table.columns
    assert frame.shape == (3, 6)
    assert frame["key"].tolist() == ["k1", "k2", "k3"]
    assert frame["x"].tolist() == [1, 2, 3]
    assert frame["y"].iloc[:2].tolist() == [1.5, 4.0]
    assert pd.isna(frame["y"].iloc[2])
    # ...and back: same rows (missing cells become None/NaN)
    back = Table(frame.to_dict("records"))
    assert back.keys == table.keys
    assert back["x"] == table["x"]


def test_to_pandas_empty() -> None:
    frame = Table().to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert frame.shape == (0, 0)


def test_to_polars() -> None:
    table = sample()
    frame = table.to_polars()
    assert isinstance(frame, pl.DataFrame)
    assert frame.columns == table.columns
    assert frame.shape == (3, 6)
    assert frame["key"].to_list() == ["k1", "k2", "k3"]
    assert frame["x"].to_list() == [1, 2, 3]
    assert frame["y"].to_list() == [1.5, 4.0, None]
    back = Table(frame.to_dicts())
    assert back.keys == table.keys
    assert back["y"] == table["y"]


def test_to_polars_infers_from_all_rows() -> None:
    # The first rows lack the column; its type comes from later rows.
    rows = [{"key": f"k{i}"} for i in range(150)] + [{"key": "last", "y": 2.5}]
    frame = Table(rows).to_polars()
    assert frame["y"].dtype == pl.Float64
    assert frame["y"].to_list()[-1] == 2.5


def test_to_polars_datetimes() -> None:
    frame = Table([{"key": "a", "finished_at": T0}]).to_polars()
    assert frame["finished_at"].to_list() == [T0]


def test_to_polars_empty() -> None:
    # A fetch with no results (e.g. no failed tasks) must still convert.
    frame = Table().to_polars()
    assert isinstance(frame, pl.DataFrame)
    assert frame.height == 0


# -- format -----------------------------------------------------------------------------------


def test_format() -> None:
    text = Table(
        [
            {"key": "k1", "y": 1 / 3, "at": T0, "note": None},
            {"key": "k2", "y": 2.0, "at": None, "note": "a" * 40},
        ]
    ).format()
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0].split() == ["key", "y", "at", "note"]
    assert lines[1].split() == ["k1", "0.333333", "12:30:15.123"]
    assert lines[2].split() == ["k2", "2", "a" * 21 + "..."]
    # columns are aligned: "key" is the widest cell of the first column, then two spaces
    assert lines[0][5] == "y"
    assert lines[1][5:].startswith("0.333333  12:30:15.123")
    assert lines[2][5:].startswith("2         ")


def test_format_max_rows_and_columns() -> None:
    table = Table([{"key": f"k{i}", "x": i, "y": -i} for i in range(30)])
    text = table.format(max_rows=5, columns=["x"])
    lines = text.splitlines()
    assert lines[0].strip() == "x"
    assert [line.strip() for line in lines[1:6]] == ["0", "1", "2", "3", "4"]
    assert lines[-1] == "... 25 more rows"
    assert "k0" not in text
    assert "more rows" not in table.format(max_rows=30)


def test_format_empty() -> None:
    assert "more rows" not in Table().format()
    assert Table().format(columns=["key"]).strip() == "key"


# -- flatten_task -----------------------------------------------------------------------------


def test_flatten_basic() -> None:
    row = flatten_task(
        "k1",
        "finished",
        {
            "worker_id": "w1",
            "xs": {"x": 1, "z": "a"},
            "ys": {"y": 2.0},
            "xs_extra": {"seed": 7},
            "ys_extra": {"elapsed": 0.5},
            "created_at": T0,
            "started_at": T0,
            "finished_at": T0,
            "retries": 0,
        },
    )
    assert list(row) == [
        "key",
        "state",
        "worker_id",
        "x",
        "z",
        "y",
        "seed",
        "elapsed",
        "created_at",
        "started_at",
        "finished_at",
    ]
    assert row["x"] == 1
    assert row["y"] == 2.0
    assert row["seed"] == 7
    assert row["finished_at"] == T0


def test_flatten_queued_task_has_no_worker() -> None:
    row = flatten_task("k", "queued", {"xs": {"x": 1}})
    assert row == {"key": "k", "state": "queued", "worker_id": None, "x": 1}


def test_flatten_missing_and_empty_groups() -> None:
    row = flatten_task("k", "queued", {"xs": {}, "ys": None})
    assert row == {"key": "k", "state": "queued", "worker_id": None}


def test_flatten_failed_task_keeps_condition() -> None:
    condition = {"type": "ValueError", "message": "odd", "traceback": "..."}
    row = flatten_task("k", "failed", {"xs": {"x": 1}, "condition": condition})
    assert row["condition"] == condition
    assert row["x"] == 1


@pytest.mark.parametrize("name", RESERVED_COLUMNS)
def test_flatten_xs_named_like_reserved_column(name: str) -> None:
    row = flatten_task("k", "finished", {"worker_id": "w", "xs": {name: "user"}})
    assert row["key"] == "k"
    assert row["state"] == "finished"
    assert row["worker_id"] == "w"
    assert row[f"xs.{name}"] == "user"


@pytest.mark.parametrize("name", ["condition", "created_at", "started_at", "finished_at"])
def test_flatten_entry_named_like_trailing_column(name: str) -> None:
    task = {"xs": {name: "user-x"}, "ys": {name: "user-y"}, name: "system"}
    row = flatten_task("k", "failed", task)
    assert row[name] == "system"
    assert row[f"xs.{name}"] == "user-x"
    assert row[f"ys.{name}"] == "user-y"


def test_flatten_collision_between_groups() -> None:
    row = flatten_task(
        "k",
        "finished",
        {"xs": {"x": 1}, "ys": {"x": 2, "y": 3}, "xs_extra": {"y": 4}, "ys_extra": {"x": 5}},
    )
    # The first group keeps the plain name; later ones are prefixed with their group.
    assert row["x"] == 1
    assert row["ys.x"] == 2
    assert row["y"] == 3
    assert row["xs_extra.y"] == 4
    assert row["ys_extra.x"] == 5


def test_flatten_non_string_names() -> None:
    row = flatten_task("k", "finished", {"xs": {1: "one"}, "ys": {"1": "uno"}})
    assert row["1"] == "one"
    assert row["ys.1"] == "uno"


def test_flatten_never_drops_a_value() -> None:
    # Even when a prefixed name is itself taken, every entry must survive.
    task = {"xs": {"xs.key": "dotted", "key": "plain"}, "ys": {"ys.x": "a", "x": "b"}, "xs_extra": {"x": "c"}}
    row = flatten_task("k", "finished", task)
    values = [v for name, v in row.items() if name not in ("key", "state", "worker_id")]
    assert sorted(values) == ["a", "b", "c", "dotted", "plain"]
    assert row["key"] == "k"


def test_table_of_flattened_rows() -> None:
    rows = [
        flatten_task("k1", "finished", {"worker_id": "w", "xs": {"x": 1}, "ys": {"y": 1}}),
        flatten_task("k2", "failed", {"worker_id": "w", "xs": {"x": 2}, "condition": {"type": "E"}}),
    ]
    table = Table(rows)
    assert table.columns == ["key", "state", "worker_id", "x", "y", "condition"]
    assert table["y"] == [1, None]
    assert table.to_pandas()["x"].tolist() == [1, 2]
