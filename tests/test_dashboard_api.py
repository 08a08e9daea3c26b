"""The dashboard's JSON API and live events on a live network (the page: test_dashboard_browser)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio

from rushpy import Controller, EmbeddedServer, RedisConfig
from rushpy.keys import Keys
from rushpy.server import _free_port
from tests.dashboard import running_dashboard
from tests.helpers import eventually

pytestmark = pytest.mark.usefixtures("anyio_backend")

TOKEN = "a-long-random-token-for-the-tests"


@pytest.fixture
async def api(config: RedisConfig) -> AsyncIterator[httpx.AsyncClient]:
    with running_dashboard(config, token=TOKEN) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield client


def n(network_id: str) -> str:
    return f"/api/n/{network_id}"


async def events(client: httpx.AsyncClient, path: str, count: int) -> list[tuple[str, Any]]:
    """The first ``count`` server-sent events of ``path``."""
    found: list[tuple[str, Any]] = []
    name = ""
    with anyio.fail_after(30):
        async with client.stream("GET", path) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    found.append((name, json.loads(line[6:])))
                    if len(found) == count:
                        return found
    return found


async def test_config_and_networks(api: httpx.AsyncClient, controller: Controller, study: Any) -> None:
    page = await api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in page.text
    assert (await api.get("/static/app.js")).status_code == 200
    assert (await api.get("/api/config")).json() == {"network": None, "actions": True, "version": _version()}
    rows = {r["network"]: r for r in (await api.get("/api/networks")).json()}
    assert rows[controller.network_id]["n_finished_tasks"] == 3


def _version() -> str:
    import importlib.metadata

    return importlib.metadata.version("rushpy")


async def test_summary_workers_and_an_unknown_network(
    api: httpx.AsyncClient, controller: Controller, study: Any
) -> None:
    summary = (await api.get(n(controller.network_id) + "/summary")).json()
    assert summary["counts"] == {"queued": 0, "running": 0, "finished": 3, "failed": 3, "all": 6}
    assert summary["workers"]["running"] == 2
    workers = (await api.get(n(controller.network_id) + "/workers")).json()
    assert {w["worker_id"] for w in workers} == set(study["workers"])
    assert sum(w["n_failed"] for w in workers) == 3
    assert any("odd input" in (w["last_error"] or "") for w in workers)
    missing = await api.get(n("no-such-network") + "/summary")
    assert missing.status_code == 404 and "no network 'no-such-network'" in missing.json()["error"]


async def test_task_pages_are_bounded_and_filtered(
    api: httpx.AsyncClient, controller: Controller, study: Any
) -> None:
    base = n(controller.network_id) + "/tasks"
    page = (await api.get(base, params={"limit": 4, "offset": 2})).json()
    assert page["total"] == 6 and page["offset"] == 2 and len(page["rows"]) == 4
    failed = (await api.get(base, params={"state": "failed"})).json()
    assert sorted(r["inputs"]["x"] for r in failed["rows"]) == [1, 3, 5]
    assert all(r["condition"].startswith("ValueError: odd input") for r in failed["rows"])
    finished = (await api.get(base, params={"state": "finished"})).json()["rows"]
    assert sorted(r["outputs"]["y"] for r in finished) == [0, 2, 4]
    one = finished[0]["worker_id"]  # a worker that ran tasks (the other may have run none)
    mine = (await api.get(base, params={"worker": one})).json()
    everyone = (await api.get(base, params={"limit": 500})).json()["rows"]
    assert [r["key"] for r in mine["rows"]] == [r["key"] for r in everyone if r["worker_id"] == one]
    for bad in ({"limit": 100_000}, {"offset": -1}, {"state": "sleeping"}, {"limit": "many"}):
        answer = await api.get(base, params=bad)
        assert answer.status_code == 400 and "invalid" in answer.json()["error"]


async def test_task_detail_has_every_condition_with_its_traceback(
    api: httpx.AsyncClient, controller: Controller, study: Any
) -> None:
    detail = (await api.get(n(controller.network_id) + f"/task/{study['keys'][1]}")).json()
    assert detail["state"] == "failed" and detail["inputs"] == {"x": 1} and detail["attempts"] == 1
    assert "ValueError: odd input 1" in detail["conditions"][-1]["traceback"]
    unknown = await api.get(n(controller.network_id) + "/task/no-such-key")
    assert unknown.status_code == 404 and "no-such-key" in unknown.json()["error"]


async def test_history_has_one_point_per_finished_task(
    api: httpx.AsyncClient, controller: Controller, study: Any
) -> None:
    history = (await api.get(n(controller.network_id) + "/history")).json()
    assert history["inputs"] == ["x"] and history["outputs"] == ["y"] and history["total"] == 3
    ys = [p["outputs"]["y"] for p in history["points"]]
    times = [p["t"] for p in history["points"]]
    assert sorted(ys) == [0, 2, 4] and times == sorted(times)
    two = await api.get(n(controller.network_id) + "/history", params={"limit": 2})
    assert len(two.json()["points"]) == 2
    # Nothing finished yet (after a reset): an empty history, not an error.
    await controller.stop_workers()
    await controller.reset(workers=True)
    await controller.push_tasks([{"x": 1}])
    empty = await api.get(n(controller.network_id) + "/history")
    assert empty.json() == {"inputs": [], "outputs": [], "total": 0, "points": []}


async def test_log_tail_by_level_and_worker(
    api: httpx.AsyncClient, controller: Controller, study: Any
) -> None:
    base = n(controller.network_id) + "/logs"

    async def failures() -> list[Any]:
        rows = (await api.get(base, params={"level": "warning"})).json()
        return [r for r in rows if r["event"] == "task failed"]

    async def three() -> bool:
        return len(await failures()) == 3

    await eventually(three, "the failures reach the log tail", timeout=15)
    assert all(r["level"] == "warning" for r in (await api.get(base, params={"level": "warning"})).json())
    one = study["workers"][0]
    mine = (await api.get(base, params={"worker": one, "level": "debug"})).json()
    assert {r["worker_id"] for r in mine} == {one}
    assert len((await api.get(base, params={"level": "debug", "limit": 1})).json()) == 1
    assert (await api.get(base, params={"level": "loud"})).status_code == 400


async def test_events_carry_live_summaries_and_survive_a_reset(
    api: httpx.AsyncClient, controller: Controller, study: Any
) -> None:
    path = n(controller.network_id) + "/events"
    [(name, summary)] = await events(api, path, 1)
    assert name == "summary" and summary["counts"]["finished"] == 3 and summary["throughput"] == 0
    await controller.stop_workers()
    await controller.reset(workers=True)
    assert [e[0] for e in await events(api, path, 1)] == ["gone"]
    assert (await api.get(n(controller.network_id) + "/summary")).status_code == 404
    await controller.push_tasks([{"x": 1}])  # the network is back
    [(name, summary)] = await events(api, path, 1)
    assert name == "summary" and summary["counts"]["queued"] == 1


async def test_actions_need_the_token(api: httpx.AsyncClient, controller: Controller, study: Any) -> None:
    base = n(controller.network_id) + "/actions"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        refused = await api.post(base + "/retry", json={"keys": None}, headers=headers)
        assert refused.status_code == 403 and "token" in refused.json()["error"]
    assert (await controller.status()).n_failed_tasks == 3  # nothing was done
    auth = {"Authorization": f"Bearer {TOKEN}"}
    bad = await api.post(base + "/cancel", json={"keys": "all"}, headers=auth)
    assert bad.status_code == 400 and "list of strings" in bad.json()["error"]
    retried = (await api.post(base + "/retry", json={"keys": None}, headers=auth)).json()
    assert retried["ok"] and sorted(retried["retried"]) == sorted(study["keys"][i] for i in (1, 3, 5))
    stopped = (await api.post(base + "/stop", json={"worker_ids": None, "kill": False}, headers=auth)).json()
    assert sorted(stopped["stopped"]) == sorted(study["workers"])
    [queued] = await controller.push_tasks([{"x": 2}])
    cancelled = (await api.post(base + "/cancel", json={"keys": [queued]}, headers=auth)).json()
    assert cancelled == {"ok": True, "cancelled": [queued]} or cancelled["cancelled"] == []


async def test_a_read_only_dashboard_refuses_every_action(
    config: RedisConfig, controller: Controller
) -> None:
    await controller.push_tasks([{"x": 1}])
    with running_dashboard(config) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/api/config")).json()["actions"] is False
            refused = await client.post(n(controller.network_id) + "/actions/stop", json={}, headers={})
    assert refused.status_code == 403 and "read-only" in refused.json()["error"]


async def test_events_report_a_server_that_is_down_and_recover_when_it_is_back(tmp_path: Any) -> None:
    port = _free_port()
    server = EmbeddedServer(port=port, data_dir=tmp_path, appendonly=True)
    server.start()
    try:
        config = RedisConfig.from_url(f"{server.url}?reconnect_budget=1&socket_timeout=1")
        async with Controller("restarts", config=config) as rush:
            await rush.push_tasks([{"x": 1}])
        with running_dashboard(config) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                path = n("restarts") + "/events"
                assert [e[0] for e in await events(client, path, 1)] == ["summary"]
                server.stop()
                names = [e[0] for e in await events(client, path, 1)]
                assert names == ["down"]
                assert (await client.get(n("restarts") + "/summary")).status_code == 503
                server.start()

                async def back() -> bool:
                    return (await client.get(n("restarts") + "/summary")).status_code == 200

                await eventually(back, "the dashboard reads again", timeout=30)
                [(name, summary)] = await events(client, path, 1)
                assert name == "summary" and summary["counts"]["queued"] == 1  # the AOF kept the task
    finally:
        server.stop()


def test_the_page_and_its_assets_ship_in_the_package_and_load_nothing_from_elsewhere() -> None:
    import re
    from importlib import resources

    static = resources.files("rushpy.dashboard").joinpath("static")
    names = {p.name for p in static.iterdir()}
    assert {"index.html", "app.js", "charts.js", "style.css"} <= names
    for name in names:
        text = static.joinpath(name).read_text()
        # No CDN, no font service, no analytics: every URL the page uses is its own.
        assert not re.search(r"(src|href)=[\"']https?://", text), name
        assert "://cdn" not in text and "googleapis" not in text, name


async def test_a_corrupt_task_costs_its_own_row_not_the_page_or_the_history(
    api: httpx.AsyncClient, controller: Controller, study: Any, raw: redis.asyncio.Redis
) -> None:
    """Garbage written into one finished task's results: pages, detail and history still answer."""
    from tests.helpers import set_stored_field

    damaged = study["keys"][2]  # x=2, finished
    await set_stored_field(raw, Keys(controller.network_id), damaged, "ys", b"\xc1")
    base = n(controller.network_id)
    page = await api.get(base + "/tasks", params={"limit": 500})
    assert page.status_code == 200 and len(page.json()["rows"]) == 6
    detail = await api.get(base + f"/task/{damaged}")
    assert detail.status_code == 200 and detail.json()["outputs"] == {}
    history = await api.get(base + "/history")
    assert history.status_code == 200 and history.json()["total"] == 3
    assert sorted(p["outputs"]["y"] for p in history.json()["points"] if "y" in p["outputs"]) == [0, 4]
    # Several pages open at once share the network's controller.
    replies = []
    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(lambda: _collect(api, base + "/summary", replies))
    assert [r.status_code for r in replies] == [200] * 20


async def _collect(api: httpx.AsyncClient, path: str, into: list[httpx.Response]) -> None:
    into.append(await api.get(path))
