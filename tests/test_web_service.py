"""The web-service example (examples/web_service.py) served by a real uvicorn on a loopback port.

One Controller in the app's lifespan is shared by every handler: 100 concurrent
POSTs and GETs are each answered once and correctly, and the NDJSON stream
delivers every result once.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest
import uvicorn

from rushpy import Controller, RedisConfig
from tests.helpers import REPO, eventually, wait_exit

pytestmark = pytest.mark.usefixtures("anyio_backend")

N_JOBS = 100


def load_example() -> ModuleType:
    """The example as a module (``examples`` is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("web_service_example", REPO / "examples" / "web_service.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


web = load_example()


def bound_socket() -> socket.socket:
    """A listening-ready socket on a free loopback port (handed to uvicorn: no port race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app`` (lifespan included) on uvicorn; yield a client of it; shut it down after."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        await eventually(lambda: server.started, "uvicorn started (lifespan done)", timeout=60)
        try:
            limits = httpx.Limits(max_connections=N_JOBS + 10)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits
            ) as client:
                yield client
        finally:
            server.should_exit = True  # runs the lifespan's shutdown: workers stopped, controller closed
    sock.close()


def job_input(i: int) -> float:
    """Every tenth job gets a negative ``x``, which the job function refuses: some jobs fail."""
    return float(-i - 1 if i % 10 == 0 else i)


async def gather(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls concurrently; their results in order."""
    results: list[Any] = [None] * len(calls)

    async def one(i: int) -> None:
        results[i] = await calls[i]()

    async with anyio.create_task_group() as tg:
        for i in range(len(calls)):
            tg.start_soon(one, i)
    return results


def check_row(row: dict[str, Any], x: float) -> None:
    """A job's row is right: its input, and its square or the refusal of a negative input."""
    assert row["x"] == x
    if x < 0:
        assert row["state"] == "failed", row
        assert row["condition"]["type"] == "ValueError"
        assert "x must be >= 0" in row["condition"]["message"]
    else:
        assert row["state"] == "finished", row
        assert row["y"] == x * x


async def test_hundred_concurrent_jobs_and_the_stream(config: RedisConfig, network_id: str) -> None:
    app = web.create_app(network_id, config=config, n_workers=2)
    async with serve(app) as client:
        streamed: list[dict[str, Any]] = []

        async def consume() -> None:
            # Opened before the jobs: results come down the stream as they arrive.
            async with client.stream("GET", "/results", params={"limit": N_JOBS}) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("application/x-ndjson")
                async for line in response.aiter_lines():
                    if line:
                        streamed.append(json.loads(line))

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await eventually(lambda: app.state.streaming, "the stream has its consumer")
            # A second consumer would take a share of the results: refused.
            second = await client.get("/results", params={"limit": 1})
            assert second.status_code == 409
            posts = await gather(
                [lambda i=i: client.post("/jobs", json={"x": job_input(i)}) for i in range(N_JOBS)]
            )
            assert [p.status_code for p in posts] == [202] * N_JOBS
            keys = [p.json()["key"] for p in posts]
            assert len(set(keys)) == N_JOBS  # every POST made its own job
        # The stream delivered each result once, and each one right.
        inputs = dict(zip(keys, (job_input(i) for i in range(N_JOBS)), strict=True))
        assert sorted(row["key"] for row in streamed) == sorted(keys)
        for row in streamed:
            check_row(row, inputs[row["key"]])
        assert not app.state.streaming  # the slot is free again once the stream ended

        gets = await gather([lambda k=k: client.get(f"/jobs/{k}") for k in keys])
        assert [g.status_code for g in gets] == [200] * N_JOBS
        for key, got in zip(keys, gets, strict=True):
            row = got.json()
            assert row["key"] == key
            check_row(row, inputs[key])
            if row["state"] == "finished":
                assert isinstance(row["finished_at"], str)  # timestamps as ISO 8601

        # Every result went out on the first stream: a new one finds nothing and ends when idle.
        again = await client.get("/results", params={"idle": 0.2})
        assert again.status_code == 200
        assert again.text == ""


async def test_bad_requests(config: RedisConfig, network_id: str) -> None:
    app = web.create_app(network_id, config=config, join=True)
    async with serve(app) as client:
        assert (await client.get("/jobs/no-such-key")).status_code == 404
        assert (await client.post("/jobs", content=b"{not json")).status_code == 400
        assert (await client.post("/jobs", json=[1, 2])).status_code == 422
        assert (await client.get("/results", params={"limit": "many"})).status_code == 422
        assert (await client.get("/results", params={"idle": "soon"})).status_code == 422
        assert (await client.get("/results", params={"limit": 0})).status_code == 422
        assert (await client.get("/results", params={"idle": -1})).status_code == 422
        assert (await client.get("/results", params={"idle": "nan"})).status_code == 422
        assert not app.state.streaming  # a refused request does not take the stream


async def test_join_uses_workers_started_elsewhere_and_the_env_url(
    config: RedisConfig, network_id: str, controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No config given: the app finds the server in $RUSHPY_REDIS_URL, like a deployed service.
    monkeypatch.setenv("RUSHPY_REDIS_URL", config.to_url(include_password=True))
    app = web.create_app(network_id, join=True)
    async with serve(app) as client:
        assert await controller.n_workers() == 0  # --join starts none
        posted = await client.post("/jobs", json={"x": 4})
        key = posted.json()["key"]
        assert (await controller.fetch_task(key))["state"] == "queued"  # the same server and network
        await controller.start_local_workers(1, fun=web.FUNCTION)

        async def finished() -> bool:
            return bool((await client.get(f"/jobs/{key}")).json()["state"] == "finished")

        await eventually(finished, "the job finished on the joined worker", timeout=60)
        assert (await client.get(f"/jobs/{key}")).json()["y"] == 16


async def test_documented_command(tmp_path: Any) -> None:
    """``python examples/web_service.py --port P``, no server configured: it starts an embedded one."""
    probe = bound_socket()
    port = probe.getsockname()[1]
    probe.close()
    env = {k: v for k, v in os.environ.items() if k not in ("RUSHPY_REDIS_URL", "REDIS_URL")}
    log = (tmp_path / "out.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "examples/web_service.py", "--port", str(port), "--workers", "1"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

            async def up() -> bool:
                try:
                    return (await client.get("/jobs/none")).status_code == 404
                except httpx.TransportError:
                    return False

            await eventually(up, "the service answers", timeout=60)
            key = (await client.post("/jobs", json={"x": 3})).json()["key"]

            async def finished() -> bool:
                return bool((await client.get(f"/jobs/{key}")).json()["state"] == "finished")

            await eventually(finished, "the job finished", timeout=60)
            assert (await client.get(f"/jobs/{key}")).json()["y"] == 9
        process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown runs the lifespan's exit
        assert await wait_exit(process, timeout=60) == 0, (tmp_path / "out.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
