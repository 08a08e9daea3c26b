"""Smoke test of the side-by-side benchmark (benchmarks/compare.py): tiny sizes, correctness only.

CI installs no peer framework, so this covers the adapter interface with the
two adapters that need none: rushpy and the hand-written LPUSH/BRPOP loop.
Nothing here measures or asserts speed.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from benchmarks import compare
from benchmarks.peers import registry, workloads
from benchmarks.peers.base import Adapter
from rushpy import EmbeddedServer

CI_PEERS = ["rushpy", "handwritten"]


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
    assert (args.only, args.peers, args.repeats) == (["W1", "W3"], CI_PEERS, 1)
    assert compare.parse_args(["--peers", "rushpy"]).repeats == 3
    assert "rushpy" in compare.parse_args([]).peers
    for bad in (["--only", "W9"], ["--peers", "nosuch"]):
        with pytest.raises(SystemExit):
            compare.parse_args(bad)
    with pytest.raises(KeyError, match="unknown peer 'nosuch'"):
        registry.create("nosuch")
