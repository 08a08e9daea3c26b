"""An async web service that embeds one rushpy Controller and shares it across its request handlers.

Endpoints (JSON):

- ``POST /jobs`` with a JSON object body, e.g. ``{"x": 3}``: pushes one task with
  those inputs, answers ``202 {"key": ...}``.
- ``GET /jobs/{key}``: the task's state and row (``fetch_task``): inputs, results
  (``y``) once finished, ``condition`` once failed; ``404`` for an unknown key.
- ``GET /results``: NDJSON stream, one line per task as it finishes or fails for
  good, each task once. The stream's cursor belongs to the Controller, so the
  service allows one consumer at a time (a second one gets ``409``); see
  docs/web.md for fanning out to many. ``?limit=N`` ends the stream once N
  rows were sent (a batch is never cut), ``?idle=S`` after S seconds without one.

The Controller lives in the app's lifespan: it is entered once at start-up,
shared by every handler (it is safe to share between coroutines), and closed
at shutdown after the local workers it started are stopped.

Run: python examples/web_service.py [--port 8000] [--workers 2] [--network web] [--join]
     (uses $RUSHPY_REDIS_URL when it is set, else starts an embedded server;
     --join starts no workers and relies on ones started elsewhere with
     ``python -m rushpy.worker --network web --fun examples/web_service.py:compute``)
Try:  curl -X POST localhost:8000/jobs -d '{"x": 3}'  then  curl localhost:8000/jobs/KEY
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

import rushpy
from rushpy.config import configured_url

FUNCTION = f"{Path(__file__).resolve()}:compute"
"""The task function by file path: workers import it whether this file runs as a script or a module."""

STREAM_STATES = ("finished", "failed")
"""A job leaves the stream once: when it finishes, or when it fails for good."""


async def compute(x: float, delay: float = 0.0) -> dict[str, float]:
    """The job every task runs (on the workers): squares ``x``; a negative ``x`` fails."""
    if delay:
        await asyncio.sleep(delay)
    if x < 0:
        raise ValueError(f"x must be >= 0, got {x}")
    return {"y": x * x}


def jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    """A task row as JSON values: timestamps become ISO 8601 strings."""
    return {k: v.isoformat() if isinstance(v, datetime.datetime) else v for k, v in row.items()}


class ExclusiveStream(StreamingResponse):
    """The NDJSON result stream; frees the app's one stream slot when the response ends.

    Freed here rather than in the generator: a client that disconnects before the
    body starts leaves the generator unstarted, and its ``finally`` would never run.
    """

    def __init__(self, content: AsyncIterator[bytes], app: Starlette) -> None:
        super().__init__(content, media_type="application/x-ndjson")
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._app.state.streaming = False


def create_app(
    network_id: str = "web",
    config: rushpy.RedisConfig | None = None,
    n_workers: int = 2,
    join: bool = False,
) -> Starlette:
    """The service: one Controller of ``network_id`` for all handlers, opened in the lifespan.

    Args:
        network_id: The rushpy network the jobs go to.
        config: The Redis server; ``None``: ``$RUSHPY_REDIS_URL`` (or ``$REDIS_URL``),
            else an embedded server started with the app.
        n_workers: Local worker processes started in the lifespan.
        join: Start no workers: rely on workers already serving ``network_id``.

    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with contextlib.ExitStack() as servers:
            server_config = config
            if server_config is None:
                url = configured_url()
                if url:
                    server_config = rushpy.RedisConfig.from_url(url)
                else:
                    server_config = servers.enter_context(rushpy.EmbeddedServer()).config
            # Leaving the Controller's context stops the local workers it started.
            async with rushpy.Controller(network_id, config=server_config) as rush:
                if not join:
                    await rush.start_local_workers(n_workers, fun=FUNCTION)
                app.state.rush = rush
                app.state.streaming = False  # one reader of the result stream at a time
                yield

    async def submit(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "the body must be a JSON object of task inputs"}, status_code=422)
        rush: rushpy.Controller = request.app.state.rush
        (key,) = await rush.push_tasks([body])
        return JSONResponse({"key": key}, status_code=202)

    async def status(request: Request) -> Response:
        rush: rushpy.Controller = request.app.state.rush
        key = request.path_params["key"]
        try:
            row = await rush.fetch_task(key)
        except rushpy.UnknownTaskError:
            return JSONResponse({"error": f"no job {key!r}"}, status_code=404)
        return JSONResponse(jsonable(row))

    async def results(request: Request) -> Response:
        rush: rushpy.Controller = request.app.state.rush
        try:
            limit = int(request.query_params["limit"]) if "limit" in request.query_params else None
            idle = float(request.query_params["idle"]) if "idle" in request.query_params else None
        except ValueError:
            limit = idle = -1  # refused just below
        if (limit is not None and limit < 1) or (idle is not None and not 0 <= idle < math.inf):
            return JSONResponse(
                {"error": "limit is an integer >= 1, idle a finite number of seconds >= 0"}, status_code=422
            )
        if request.app.state.streaming:
            # Two readers of one controller's stream would each get a share of the
            # results; refuse rather than deliver half.
            return JSONResponse({"error": "the result stream already has a consumer"}, status_code=409)
        request.app.state.streaming = True

        async def lines() -> AsyncIterator[bytes]:
            sent = 0
            while limit is None or sent < limit:
                if not await rush.wait_for_new_tasks(timeout=idle, states=STREAM_STATES):
                    return  # nothing new for ``idle`` seconds (None: wait for ever)
                # fetch_new_tasks hands each row out once: send the whole batch, even
                # past ``limit``, or its rows would be lost to every consumer.
                for row in await rush.fetch_new_tasks(states=STREAM_STATES):
                    yield (json.dumps(jsonable(row)) + "\n").encode()
                    sent += 1

        return ExclusiveStream(lines(), request.app)

    return Starlette(
        routes=[
            Route("/jobs", submit, methods=["POST"]),
            Route("/jobs/{key}", status, methods=["GET"]),
            Route("/results", results, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--workers", type=int, default=2, help="local rushpy workers (default 2)")
    parser.add_argument("--network", default="web", help="network id (default web)")
    parser.add_argument("--join", action="store_true", help="start no workers: join existing ones")
    options = parser.parse_args(argv)
    app = create_app(options.network, n_workers=options.workers, join=options.join)
    uvicorn.run(app, host=options.host, port=options.port)


if __name__ == "__main__":
    main()
