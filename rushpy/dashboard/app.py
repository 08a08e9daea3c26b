"""The dashboard's web application: a Starlette app serving the page, a JSON API and live events.

Routes (``{network}`` URL-encoded):

- ``GET /``: the page; ``/static/...``: its script and style (shipped in the package, no CDN);
- ``GET /api/config``: the network it was started for (or ``null``), whether actions are on;
- ``GET /api/networks``: every network with its counts;
- ``GET /api/n/{network}/summary``, ``/workers``, ``/tasks?state=&worker=&offset=&limit=``,
  ``/task/{key}``, ``/history?limit=``, ``/logs?level=&worker=&limit=``;
- ``GET /api/n/{network}/events``: server-sent events: ``summary`` every
  :data:`EVENT_INTERVAL` s (with ``throughput``, finished per second),
  ``gone`` while the network does not exist, ``down`` while the server is
  unreachable; the stream outlives both;
- ``POST /api/n/{network}/actions/stop|cancel|retry``: only with the token the
  dashboard was started with, as ``Authorization: Bearer <token>`` (a header,
  so another site cannot make the browser send it); 403 otherwise.

Errors are JSON ``{"error": ...}``: 404 for an unknown network or task, 400
for bad parameters, 503 while the server is unreachable.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio
import anyio.abc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rushpy.config import RedisConfig
from rushpy.connection import RushClient, create_client
from rushpy.controller import Controller
from rushpy.dashboard.views import MAX_HISTORY, MAX_PAGE, NetworkView
from rushpy.errors import ConfigError, ConnectionFailedError, RushError, UnknownTaskError
from rushpy.jsonable import to_json
from rushpy.keys import DEFAULT_PREFIX, Keys
from rushpy.logs import get_logger
from rushpy.overview import LOG_LEVELS, network_statuses
from rushpy.store import Store

__all__ = ["EVENT_INTERVAL", "LOG_POLL_INTERVAL", "create_app"]

log = get_logger("rushpy.dashboard")

EVENT_INTERVAL = 1.0
"""Seconds between two ``summary`` events."""
LOG_POLL_INTERVAL = 1.0
"""Seconds between two reads of the networks' new log records."""
_STATES = ("queued", "running", "finished", "failed")
_Route = Callable[[Request], Awaitable[Response]]


class _Json(JSONResponse):
    """JSON as rushpy writes it for other programs (times ISO 8601, non-finite floats null)."""

    def render(self, content: Any) -> bytes:
        return to_json(content).encode()


class _Missing(Exception):
    """The network does not exist (any more)."""


class _Views:
    """One open :class:`NetworkView` per network looked at, each held open by a task of the app's group.

    A controller is entered and left in one task (its task group demands it),
    so each lives in a task of its own that the app's lifespan owns, not in the
    request that first asked for it.
    """

    def __init__(
        self, config: RedisConfig, prefix: str, group: anyio.abc.TaskGroup, client: RushClient
    ) -> None:
        self._config = config
        self._prefix = prefix
        self._group = group
        self.client = client
        self._views: dict[str, NetworkView] = {}
        self._lock = anyio.Lock()

    def open(self) -> list[NetworkView]:
        """The views opened so far."""
        return list(self._views.values())

    async def get(self, network_id: str) -> NetworkView:
        """The view of ``network_id``, opened on first use (raises :class:`_Missing` for an unknown one)."""
        view = self._views.get(network_id)
        if view is not None:
            return view
        async with self._lock:
            if network_id not in self._views:
                keys = Keys(network_id, self._prefix)  # an invalid id raises ConfigError here
                store = Store(self.client, keys)
                if not await store.network_exists():
                    raise _Missing(f"no network {network_id!r} (prefix {self._prefix!r}) on this server")
                await store.load_scripts()
                self._views[network_id] = await self._group.start(self._hold, store)
            return self._views[network_id]

    async def _hold(self, store: Store, *, task_status: anyio.abc.TaskStatus[NetworkView]) -> None:
        network_id = store.keys.network_id
        async with Controller(network_id, self._config, prefix=self._prefix) as controller:
            task_status.started(NetworkView(controller, store))
            await anyio.sleep_forever()  # until the app stops: its group is cancelled


def create_app(
    config: RedisConfig,
    *,
    network: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    token: str | None = None,
) -> Starlette:
    """The dashboard of the networks on the server ``config`` names.

    Args:
        config: The Redis server.
        network: Show this network first (the page offers every network either way).
        prefix: The networks' key prefix.
        token: Enables the actions (stop, cancel, retry) for requests that send
            it; without one the dashboard is read-only.

    Raises:
        ConfigError: an empty token.

    """
    if token is not None and not token:
        raise ConfigError("the dashboard's token is empty: set a long random one, or none (read-only)")
    state: dict[str, _Views] = {}

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        client = create_client(config)
        try:
            async with anyio.create_task_group() as group:
                views = state["views"] = _Views(config, prefix, group, client)
                group.start_soon(_poll_logs, views)
                try:
                    yield
                finally:
                    group.cancel_scope.cancel()  # closes every view's controller, in its own task
        finally:
            await client.aclose()

    def views() -> _Views:
        return state["views"]

    async def config_route(_: Request) -> Response:
        return _Json({"network": network, "actions": token is not None, "version": _version()})

    async def networks(_: Request) -> Response:
        # Counts only: a controller is opened for a network when the page looks at it.
        found = await network_statuses(views().client, prefix)
        return _Json([{"network": network_id, **asdict(status)} for network_id, status in found])

    def with_view(read: Callable[[NetworkView, Request], Awaitable[Any]]) -> _Route:
        async def route(request: Request) -> Response:
            try:
                view = await views().get(request.path_params["network"])
                return _Json(await read(view, request))
            except _Missing as exc:
                return _Json({"error": str(exc)}, status_code=404)
            except UnknownTaskError as exc:
                return _Json({"error": str(exc)}, status_code=404)
            except ConnectionFailedError as exc:
                return _Json({"error": str(exc)}, status_code=503)
            except (RushError, ValueError) as exc:
                return _Json({"error": str(exc)}, status_code=400)

        return route

    async def summary(view: NetworkView, _: Request) -> Any:
        if not await view.exists():
            raise _Missing(f"network {view.network_id!r} does not exist (any more): it was reset")
        return await view.summary()

    async def workers(view: NetworkView, _: Request) -> Any:
        return await view.workers()

    async def tasks(view: NetworkView, request: Request) -> Any:
        q = request.query_params
        state_name = q.get("state") or None
        if state_name is not None and state_name not in _STATES:
            raise ConfigError(f"invalid state {state_name!r}: use one of {', '.join(_STATES)}")
        offset = _int(q.get("offset"), 0, "offset", 0, 10**12)
        limit = _int(q.get("limit"), 50, "limit", 1, MAX_PAGE)
        return await view.task_page(state_name, q.get("worker") or None, offset, limit)

    async def task(view: NetworkView, request: Request) -> Any:
        return await view.task(request.path_params["key"])

    async def history(view: NetworkView, request: Request) -> Any:
        return await view.history(_int(request.query_params.get("limit"), 10_000, "limit", 1, MAX_HISTORY))

    async def logs(view: NetworkView, request: Request) -> Any:
        q = request.query_params
        level = q.get("level") or "info"
        if level not in LOG_LEVELS:
            raise ConfigError(f"invalid level {level!r}: use one of {', '.join(LOG_LEVELS)}")
        return view.log_tail(level, q.get("worker") or None, _int(q.get("limit"), 200, "limit", 1, 5000))

    async def events(request: Request) -> Response:
        network_id = request.path_params["network"]
        return StreamingResponse(
            _events(views(), network_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def action(do: Callable[[NetworkView, dict[str, Any]], Awaitable[Any]]) -> _Route:
        async def run(view: NetworkView, request: Request) -> Any:
            body = await request.json() if await request.body() else {}
            if not isinstance(body, dict):
                raise ConfigError("the request body must be a JSON object")
            return {"ok": True, **(await do(view, body))}

        read = with_view(run)

        async def route(request: Request) -> Response:
            if token is None:
                return _Json({"error": "the dashboard is read-only: start it with a token"}, status_code=403)
            sent = request.headers.get("authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
                refusal = "missing or wrong token: send Authorization: Bearer <token>"
                return _Json({"error": refusal}, status_code=403)
            return await read(request)

        return route

    async def stop(view: NetworkView, body: dict[str, Any]) -> Any:
        return await view.stop(_keys(body, "worker_ids", allow_none=True), bool(body.get("kill")))

    async def cancel(view: NetworkView, body: dict[str, Any]) -> Any:
        keys = _keys(body, "keys", allow_none=False)
        assert keys is not None
        return await view.cancel(keys)

    async def retry(view: NetworkView, body: dict[str, Any]) -> Any:
        return await view.retry(_keys(body, "keys", allow_none=True))

    static = resources.files("rushpy.dashboard").joinpath("static")

    async def index(_: Request) -> Response:
        return FileResponse(str(static.joinpath("index.html")), headers={"Cache-Control": "no-cache"})

    base = "/api/n/{network:path}"
    routes = [
        Route("/", index),
        Mount("/static", app=StaticFiles(directory=str(static)), name="static"),
        Route("/api/config", config_route),
        Route("/api/networks", networks),
        Route(base + "/summary", with_view(summary)),
        Route(base + "/workers", with_view(workers)),
        Route(base + "/tasks", with_view(tasks)),
        Route(base + "/task/{key}", with_view(task)),
        Route(base + "/history", with_view(history)),
        Route(base + "/logs", with_view(logs)),
        Route(base + "/events", events),
        Route(base + "/actions/stop", action(stop), methods=["POST"]),
        Route(base + "/actions/cancel", action(cancel), methods=["POST"]),
        Route(base + "/actions/retry", action(retry), methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _version() -> str:
    try:
        return version("rushpy")
    except PackageNotFoundError:  # pragma: no cover - a source tree that was not installed
        return "unknown"


def _int(raw: str | None, default: int, name: str, lowest: int, highest: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"invalid {name} {raw!r}: use a whole number") from None
    if not lowest <= value <= highest:
        raise ConfigError(f"invalid {name} {value}: use {lowest} to {highest}")
    return value


def _keys(body: dict[str, Any], name: str, *, allow_none: bool) -> list[str] | None:
    value = body.get(name)
    if value is None and allow_none:
        return None
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{name} must be a list of strings" + (" or null" if allow_none else ""))
    return value


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {to_json(data)}\n\n"


async def _events(views: _Views, network_id: str) -> AsyncIterator[str]:
    """Summaries every :data:`EVENT_INTERVAL` s; ``gone`` and ``down`` while they cannot be had."""
    previous: tuple[float, int] | None = None
    while True:
        try:
            view = await views.get(network_id)
            if not await view.exists():
                raise _Missing(f"network {network_id!r} does not exist (any more): it was reset")
            summary = await view.summary()
            now, finished = anyio.current_time(), summary["counts"]["finished"]
            rate = 0.0
            if previous is not None and now > previous[0]:
                rate = max(0, finished - previous[1]) / (now - previous[0])
            previous = (now, finished)
            yield _event("summary", {**summary, "throughput": round(rate, 3)})
        except _Missing as exc:
            previous = None
            yield _event("gone", {"error": str(exc)})
        except ConnectionFailedError as exc:
            previous = None
            yield _event("down", {"error": str(exc)})
        except RushError as exc:
            yield _event("down", {"error": str(exc)})
        await anyio.sleep(EVENT_INTERVAL)


async def _poll_logs(views: _Views) -> None:
    """Read the new log records of every open network into its buffer, while the app runs."""
    while True:
        for view in views.open():
            with contextlib.suppress(RushError):  # the server is down or the network gone: next time
                await view.poll_logs()
        await anyio.sleep(LOG_POLL_INTERVAL)
