"""What the dashboard shows of one network, as JSON-ready values, with every read bounded.

One :class:`NetworkView` per network the page looks at, kept open while the
dashboard runs: a :class:`~rushpy.Controller` (its finished-task cache makes
the history and the per-worker task lists incremental) and a store of its
own for raw task reads (inputs and results apart). Reads stay bounded at any
size: a task page reads its 50-odd hashes after one key snapshot; the history
sends the last ``limit`` finished tasks; the log tail comes from a ring buffer
filled by one cursor per network (:meth:`NetworkView.poll_logs`), never by
reading every worker's log per request.
"""

from __future__ import annotations

import collections
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from rushpy.controller import Controller
from rushpy.errors import UnknownTaskError
from rushpy.models import TaskState
from rushpy.overview import LOG_LEVELS, condition_line, heartbeat_age, status_counts
from rushpy.store import Store

__all__ = ["LOG_BUFFER", "MAX_HISTORY", "MAX_PAGE", "NetworkView"]

MAX_PAGE = 500
"""Task rows one page may hold."""
MAX_HISTORY = 20_000
"""Finished tasks the history may send at most."""
SAMPLES = 5
"""Newest finished tasks whose hashes tell the history which columns are inputs and which results."""
LOG_BUFFER = 5_000
"""Log records kept per network for the log tail."""
_STATES = [s.value for s in TaskState]


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _seconds(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, dt.datetime) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _of_worker(keys: Sequence[str], workers: Sequence[Any], worker: str, state: str) -> list[tuple[str, str]]:
    return [(k, state) for k, w in zip(keys, workers, strict=True) if w == worker]


def _numbers(columns: Mapping[str, Sequence[Any]], names: Sequence[str], i: int) -> dict[str, float]:
    found = {n: _number(columns[n][i]) for n in names if n in columns}
    return {n: v for n, v in found.items() if v is not None}


_LOG_COLUMNS = ("worker_id", "timestamp", "level", "logger", "event")


def _group(task: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = task.get(name)
    return dict(value) if isinstance(value, Mapping) else {}


class NetworkView:
    """The dashboard's reads and actions on one network.

    Args:
        controller: An open controller of the network.
        store: A store of the network on a client of the dashboard's own.

    """

    def __init__(self, controller: Controller, store: Store) -> None:
        self.controller = controller
        self.store = store
        self.logs: collections.deque[dict[str, Any]] = collections.deque(maxlen=LOG_BUFFER)

    @property
    def network_id(self) -> str:
        """The network's id."""
        return self.controller.network_id

    async def exists(self) -> bool:
        """Whether the server holds anything of the network (a reset removes it)."""
        return await self.store.network_exists()

    # -- counts and workers -----------------------------------------------------------------
    async def summary(self) -> dict[str, Any]:
        """Counts per task state and per worker state (one round trip)."""
        counts = status_counts(await self.controller.status())
        return {
            "network": self.network_id,
            "time": dt.datetime.now(dt.UTC).isoformat(),
            "counts": counts["tasks"],
            "workers": counts["workers"],
        }

    async def workers(self) -> list[dict[str, Any]]:
        """One row per worker: state, host, pid, heartbeat age, counts, current tasks, last error."""
        now = dt.datetime.now(dt.UTC)
        rows = []
        for w in await self.controller.worker_info():
            rows.append(
                {
                    "worker_id": w["worker_id"],
                    "state": w["state"],
                    "hostname": w.get("hostname"),
                    "pid": w.get("pid"),
                    "heartbeat_age": heartbeat_age(now, w.get("last_beat")),
                    "n_finished": w.get("n_finished"),
                    "n_failed": w.get("n_failed"),
                    "running": list(w.get("running") or []),
                    "last_error": condition_line(w.get("last_error")),
                    "started_at": _iso(w.get("started_at")),
                }
            )
        return rows

    # -- tasks ------------------------------------------------------------------------------
    async def task_page(
        self, state: str | None, worker: str | None, offset: int, limit: int
    ) -> dict[str, Any]:
        """One page of tasks (oldest first) in ``state`` (default all) run by ``worker`` (default any)."""
        states = [state] if state else _STATES
        pairs: list[tuple[str, str]] = []
        if worker:
            pairs = await self._keys_of_worker(worker, states)
        else:
            by_state = await self.controller.tasks_with_state(states)
            for name in states:
                pairs += [(key, name) for key in by_state.get(name, [])]
        page = pairs[offset : offset + limit]
        # lookup_rows reads hashes and finished tasks' packed rows alike, with their state now.
        found = await self.store.reads.lookup_rows([key for key, _ in page])
        rows = [self._row(key, hit[0], hit[1]) for (key, _), hit in zip(page, found, strict=True) if hit]
        return {"total": len(pairs), "offset": offset, "rows": rows}

    async def _keys_of_worker(self, worker: str, states: Sequence[str]) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        if TaskState.RUNNING.value in states:
            running = next((w for w in await self.workers() if w["worker_id"] == worker), None)
            pairs += [(key, "running") for key in (running or {}).get("running", [])]
        if TaskState.FINISHED.value in states:
            finished = await self.controller.fetch_finished_tasks()
            pairs += _of_worker(finished["key"], finished["worker_id"], worker, "finished")
        if TaskState.FAILED.value in states:
            failed = await self.controller.fetch_failed_tasks()
            pairs += _of_worker(failed["key"], failed["worker_id"], worker, "failed")
        return pairs  # queued tasks belong to no worker

    @staticmethod
    def _row(key: str, state: str, task: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "key": key,
            "state": state,
            "worker_id": task.get("worker_id"),
            "started_at": _iso(task.get("started_at")),
            "finished_at": _iso(task.get("finished_at")),
            "inputs": _group(task, "xs"),
            "outputs": _group(task, "ys"),
            "condition": condition_line(task.get("condition")),
        }

    async def task(self, key: str) -> dict[str, Any]:
        """One task with everything: inputs, results, extras, every condition (raises for an unknown key)."""
        [found] = await self.store.reads.lookup_rows([key])
        if found is None:
            await self.controller.fetch_task(key)  # raises UnknownTaskError, naming the network
            raise UnknownTaskError(f"no task {key!r}")  # pragma: no cover - it raised above
        state, task = found
        extras = {**_group(task, "xs_extra"), **_group(task, "ys_extra")}
        conditions = task.get("conditions")
        return {
            **self._row(key, state, task),
            "attempts": task.get("attempts"),
            "max_retries": task.get("max_retries"),
            "created_at": _iso(task.get("created_at")),
            "extras": extras,
            "conditions": list(conditions) if isinstance(conditions, list) else [],
        }

    # -- history ----------------------------------------------------------------------------
    async def history(self, limit: int) -> dict[str, Any]:
        """The last ``limit`` finished tasks: finish time and numeric inputs and results."""
        finished = await self.controller.fetch_finished_tasks()
        total = len(finished)
        if not total:  # an empty table has no columns at all
            return {"inputs": [], "outputs": [], "total": 0, "points": []}
        recent = finished[max(0, total - limit) :]
        keys = recent["key"]
        # Which columns are inputs and which results: the groups of the newest tasks'
        # hashes (several, so one damaged task does not hide every result).
        samples = [hit[1] for hit in await self.store.reads.lookup_rows(keys[-SAMPLES:]) if hit]
        inputs = list(dict.fromkeys(name for task in samples for name in _group(task, "xs")))
        outputs = list(dict.fromkeys(name for task in samples for name in _group(task, "ys")))
        columns = {name: recent[name] for name in (*inputs, *outputs) if name in recent.columns}
        times = recent["finished_at"]
        points = []
        for i, key in enumerate(keys):
            t = _seconds(times[i])
            if t is None:
                continue
            points.append(
                {
                    "key": key,
                    "t": t,
                    "inputs": _numbers(columns, inputs, i),
                    "outputs": _numbers(columns, outputs, i),
                }
            )
        points.sort(key=lambda p: p["t"])
        numeric_in = [n for n in inputs if any(n in p["inputs"] for p in points)]
        numeric_out = [n for n in outputs if any(n in p["outputs"] for p in points)]
        return {"inputs": numeric_in, "outputs": numeric_out, "total": total, "points": points}

    # -- logs -------------------------------------------------------------------------------
    async def poll_logs(self) -> int:
        """Move new log records into the ring buffer; returns how many came."""
        rows = await self.controller.read_new_log()
        for row in rows:
            fields = {k: v for k, v in row.items() if k not in _LOG_COLUMNS}
            self.logs.append(
                {
                    "worker_id": row.get("worker_id"),
                    "timestamp": _iso(row.get("timestamp")),
                    "level": row.get("level"),
                    "logger": row.get("logger"),
                    "event": row.get("event"),
                    "fields": fields,
                }
            )
        return len(rows)

    def log_tail(self, level: str, worker: str | None, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` buffered records at ``level`` and above (of ``worker``), oldest first."""
        lowest = LOG_LEVELS[level]
        picked: list[dict[str, Any]] = []
        for record in reversed(self.logs):
            wanted = worker is None or record["worker_id"] == worker
            if wanted and LOG_LEVELS.get(str(record["level"]), 0) >= lowest:
                picked.append(record)
                if len(picked) >= limit:
                    break
        return picked[::-1]

    # -- actions ----------------------------------------------------------------------------
    async def stop(self, worker_ids: Sequence[str] | None, kill: bool) -> dict[str, Any]:
        """Terminate or kill workers (default every running one)."""
        result = await self.controller.stop_workers("kill" if kill else "terminate", worker_ids=worker_ids)
        return asdict(result)

    async def cancel(self, keys: Sequence[str]) -> dict[str, Any]:
        """Cancel queued or running tasks."""
        return {"cancelled": await self.controller.cancel_tasks(keys)}

    async def retry(self, keys: Sequence[str] | None) -> dict[str, Any]:
        """Re-queue failed tasks (default every failed one), attempts used up or not."""
        if keys is None:
            keys = (await self.controller.fetch_failed_tasks())["key"]
        return {"retried": await self.controller.retry_tasks(keys, ignore_max_retries=True)}
