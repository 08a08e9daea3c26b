"""Smoke test of the side-by-side benchmark (benchmarks/compare.py): tiny sizes, correctness only.

CI installs no peer framework, so this covers the adapter interface with the
two adapters that need none: rushpy and the hand-written LPUSH/BRPOP loop.
Nothing here measures or asserts speed.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence

import pytest

from benchmarks import ceiling, compare, payloads, persistence, scale, thousand
from benchmarks.peers import arq_env, registry, workloads
from benchmarks.peers.base import Adapter
from rushpy import EmbeddedServer, RedisConfig

CI_PEERS = ["rushpy", "rushpy-sync", "handwritten"]


def base_url(server: EmbeddedServer) -> str:
    return server.config.to_url(include_password=True).rsplit("/", 1)[0]


@pytest.mark.parametrize("peer", CI_PEERS)
async def test_quick_run_of_every_workload_is_correct(server: EmbeddedServer, peer: str) -> None:
    seen: list[tuple[str, str]] = []

    def on_run(workload: str, name: str, rep: int, outcome: tuple[float, ...] | str) -> None:
        seen.append((workload, name))

    results = await compare.compare(
        base_url(server), [peer], compare.WORKLOADS, sizes=workloads.QUICK, repeats=1, on_run=on_run
    )
    assert results.errors == {}
    assert seen == [(w, peer) for w in compare.WORKLOADS]
    assert results.median("W1", peer)[0] > 0  # type: ignore[index]
    p50, p99 = results.median("W2", peer)  # type: ignore[misc]
    assert 0 < p50 <= p99
    header, rows = compare.rows(results, [peer], compare.WORKLOADS)
    assert len(rows) == 1 and len(rows[0]) == len(header)
    assert rows[0][2] == "1.00" or peer != "rushpy"


async def test_both_ci_adapters_side_by_side_give_ratios(server: EmbeddedServer) -> None:
    results = await compare.compare(base_url(server), CI_PEERS, ["W1"], sizes=workloads.QUICK, repeats=1)
    header, rows = compare.rows(results, CI_PEERS, ["W1"])
    assert header == ["peer", "W1 tasks/s", "W1 x rushpy"]
    assert [r[0] for r in rows] == CI_PEERS
    assert rows[0][2] == "1.00"
    assert float(rows[1][2]) > 0
    assert "W1 x rushpy" in compare.render(header, rows, "title")
    assert compare.markdown(header, rows).splitlines()[1] == "|---|---|---|"


class Losing(Adapter):
    """A peer that drops one result: the workloads must reject it, not time it."""

    name = "losing"

    async def start_workers(self, n: int) -> None:
        pass

    async def run_batch(self, xs: Sequence[int]) -> list[int]:
        return [2 * x for x in xs][1:]

    async def run_one(self, x: int, sleep: float) -> int:
        return 2 * x + 1


async def test_workloads_reject_missing_and_wrong_results() -> None:
    adapter = Losing()
    with pytest.raises(workloads.WrongResults, match="expected 50 results"):
        await workloads.w1(adapter, 50)
    with pytest.raises(workloads.WrongResults, match="expected -10, got -9"):
        await workloads.w2(adapter, 5)
    with pytest.raises(workloads.WrongResults):
        await workloads.w3(adapter, 8)


async def test_a_failing_peer_is_recorded_and_the_others_still_run(
    server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.ADAPTERS, "losing", f"{__name__}:Losing")
    results = await compare.compare(
        base_url(server), ["losing", "handwritten"], ["W1"], sizes=workloads.QUICK, repeats=2
    )
    assert list(results.errors) == [("W1", "losing")]
    assert "WrongResults" in results.errors[("W1", "losing")]
    assert len(results.runs[("W1", "handwritten")]) == 2  # the broken peer is not retried
    _, rows = compare.rows(results, ["losing", "handwritten"], ["W1"])
    assert rows[0][1].startswith("failed: WrongResults")
    assert rows[1][2] == "-"  # no rushpy run: no ratio


def test_cli_arguments_are_checked() -> None:
    args = compare.parse_args(["--quick", "--only", "w1,W3", "--peers", "rushpy,handwritten"])
    assert (args.only, args.peers, args.repeats) == (["W1", "W3"], ["rushpy", "handwritten"], 1)
    assert compare.parse_args(["--peers", "rushpy"]).repeats == 3
    assert "rushpy" in compare.parse_args([]).peers
    for bad in (["--only", "W9"], ["--peers", "nosuch"]):
        with pytest.raises(SystemExit):
            compare.parse_args(bad)
    with pytest.raises(KeyError, match="unknown peer 'nosuch'"):
        registry.create("nosuch")


# --- W4 scale, W5 payloads and the ceiling (benchmarks/scale.py, payloads.py, ceiling.py) ---


async def test_scale_cache_figures_at_every_size(config: RedisConfig) -> None:
    sizes = scale.Sizes(cached=(30, 120), calls=3, cold_from=120, ram_rows=120)
    rows = await scale.cache_scale(config, sizes)
    assert [r.n for r in rows] == [30, 120]
    assert all(r.cached_ms > 0 for r in rows)
    # Cold fetch only from cold_from on, controller RAM only at ram_rows.
    assert rows[0].cold_us_per_row is None and rows[1].cold_us_per_row is not None
    assert rows[1].cold_us_per_row > 0
    assert rows[0].ram_bytes_per_row is None and rows[1].ram_bytes_per_row is not None
    assert rows[1].ram_bytes_per_row > 0
    header, table = scale.cache_table(rows)
    assert table[0] == ["30", table[0][1], "-", "-"] and len(header) == 4


async def test_scale_memory_and_many_workers_on_a_private_server() -> None:
    # used_memory is server-wide: a private server keeps other tests out of the delta.
    with EmbeddedServer() as private:
        figures = await scale.server_memory(private.config, 60)
        url = private.config.to_url(include_password=True).rsplit("/", 1)[0] + "/1"
        peer = await scale.peer_memory(url, "rushpy", 30)
        rate = await scale.many_workers(private.config, 300, 4, 2)
    assert figures.n == 60 and figures.bytes_per_task > 0
    assert figures.rows_bytes_per_entry > 0 and figures.finished_list_bytes_per_entry > 0
    assert peer > 0 and rate > 0
    _, table = scale.memory_table(figures, {"rushpy": peer, "broken": "failed: X"})
    assert table[-1] == ["broken: used_memory delta / task after run_batch", "failed: X"]


def test_scale_arguments() -> None:
    args = scale.parse_args(["--max-n", "100000", "--only", "cache", "--peers", "handwritten"])
    assert args.sizes.cached == (1_000, 10_000, 100_000) and args.only == ["cache"]
    assert scale.parse_args(["--quick"]).sizes == scale.QUICK
    for bad in (["--only", "nosuch"], ["--peers", "nosuch"], ["--max-n", "10"]):
        with pytest.raises(SystemExit):
            scale.parse_args(bad)


async def test_payload_shapes_through_rushpy_and_the_handwritten_loop(
    server: EmbeddedServer, config: RedisConfig
) -> None:
    sizes = payloads.Sizes(tasks=4, round_trips=2)
    rush = await payloads.rushpy_all(config, sizes)
    hand = await payloads.handwritten_all(base_url(server) + "/1", sizes)
    assert list(rush) == list(hand) == list(payloads.shapes())
    for figures in [*rush.values(), *hand.values()]:
        assert figures.tasks == 4 and figures.tasks_per_s > 0 and figures.p50 > 0
    header, rows = payloads.table(rush, hand)
    assert len(rows) == 6 and all(len(r) == len(header) for r in rows)
    assert rows[-1][1] == "90,006"  # 10,000 float64 in msgpack


def test_payload_batches_are_capped_and_wrong_counts_rejected() -> None:
    big = payloads.shapes()["vector 10,000"]
    assert payloads.expected(big) == 10_000 and payloads.expected(payloads.shapes()["100 params"]) == 100
    assert payloads.batch_size(big, 10**6) == payloads.BATCH_BYTES // 90_006
    assert payloads.batch_size(big, 3) == 3
    with pytest.raises(payloads.WrongPayloadResult, match="expected 2 results of 10"):
        payloads._check([10, 9], 10, 2, "x")
    with pytest.raises(payloads.WrongPayloadResult):
        payloads._check([10], 10, 2, "x")


async def test_ceiling_drives_the_scripts_and_checks_every_result() -> None:
    # CONFIG RESETSTAT and INFO cpu are server-wide: a private server.
    with EmbeddedServer() as private:
        sizes = ceiling.Sizes(tasks=250, lanes=2, batch=40, w1_tasks=30, bench_requests=5000)
        figures, w1, bench = await ceiling.run(private, sizes)
        alone = await asyncio.to_thread(ceiling.redis_benchmark, private.config, 500)
    assert figures.tasks == 250 and figures.tasks_per_s > 0 and figures.server_cpu_s >= 0
    assert any(name == "evalsha" for name, _, _ in figures.commands)
    assert w1 > 0
    if shutil.which("redis-benchmark") or shutil.which("valkey-benchmark"):
        assert bench is not None and alone is not None
        assert set(bench) == {"LPUSH -P 1", "RPOP -P 1", "LPUSH -P 16", "RPOP -P 16"}
        assert all(rate > 0 for rate in bench.values())
    else:
        assert bench is None
    _, rows = ceiling.table(figures, w1, bench)
    assert any(r[0] == "  W1 / ceiling tasks/s" for r in rows)
    _, rows = ceiling.table(figures, None, None)
    assert not any("W1" in r[0] for r in rows)


def test_ceiling_arguments() -> None:
    assert ceiling.parse_args(["--quick"]) == ceiling.QUICK
    assert ceiling.parse_args(["--tasks", "7", "--batch", "3"]) == ceiling.Sizes(tasks=7, batch=3)
    with pytest.raises(SystemExit):
        ceiling.parse_args(["--lanes", "0"])


def test_new_peers_are_registered_with_install_hints() -> None:
    assert {"saq", "arq"} <= set(registry.ADAPTERS)
    assert registry.INSTALL_HINT["arq"].endswith("benchmarks.peers.arq_env")
    assert registry.available("arq") == arq_env.ready()


async def test_many_workers_benchmark_counts_every_task_in_both_modes(server: EmbeddedServer) -> None:
    """benchmarks/thousand.py at toy size: correct counts and a utilisation between 0 and 1, no timing."""
    for mode in ("central", "decentralized"):
        figures = await thousand.run_mode(server, mode, n_workers=6, n_processes=2, rounds=2, duration=0.05)
        assert (figures.workers, figures.tasks) == (6, 12)
        assert 0 < figures.utilisation <= 1 and figures.span > 0
        assert figures.workers_cpu > 0


async def test_persistence_benchmark_measures_the_append_only_file() -> None:
    """benchmarks/persistence.py at toy size: no file without AOF, a growing one with it."""
    rate, size = await persistence.run_once(None, 50)
    assert rate > 0 and size == 0
    rate, size = await persistence.run_once("everysec", 50)
    assert rate > 0 and size > 0
