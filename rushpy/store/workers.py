"""Worker records: registration, heartbeats, states, stop requests, start arguments."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from rushpy.codec import decode, encode
from rushpy.models import Condition, WorkerInfo, WorkerState
from rushpy.scripts import worker_calls as wc
from rushpy.store.base import Plumbing, decode_hash, text
from rushpy.store.logs import set_fields_if_registered

__all__ = ["WorkerStore"]


class WorkerStore(Plumbing):
    """Worker operations of one network (see :class:`~rushpy.store.base.Plumbing`)."""

    async def register_worker(
        self, worker_id: str, info: Mapping[str, Any], heartbeat_expire: float | None = None
    ) -> None:
        """Record a worker as running with its registration data.

        With ``heartbeat_expire`` the first heartbeat is set in the same
        transaction, so no observer ever sees a running worker with a heartbeat
        flag but no heartbeat key.
        """
        k = self.keys
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(
                k.worker(worker_id),
                mapping={name: encode(value) for name, value in {**info, "state": "running"}.items()},
            )
            # A worker registering again under its id starts without an old crash record.
            pipe.hdel(k.worker(worker_id), "crashed")
            pipe.sadd(k.workers, worker_id)
            pipe.sadd(k.running_workers, worker_id)
            for state in (WorkerState.TERMINATED, WorkerState.KILLED, WorkerState.LOST):
                pipe.srem(getattr(k, wc.WORKER_SETS[state]), worker_id)
            pipe.delete(k.terminate_signal(worker_id), k.kill_signal(worker_id))
            if heartbeat_expire is not None:
                pipe.set(k.heartbeat(worker_id), b"1", px=max(1, int(heartbeat_expire * 1000)))
            await pipe.execute()

    async def unregister(self, worker_id: str) -> None:
        """Clean up after a worker that exited: delete its heartbeat, terminate and kill keys.

        Its registration, log and state stay (they are the network's history).
        Call it after the worker left the running state, so a heartbeat
        refresh cannot bring the key back.
        """
        k = self.keys
        await self.client.delete(
            k.heartbeat(worker_id), k.terminate_signal(worker_id), k.kill_signal(worker_id)
        )

    async def rejoin(self, worker_id: str, heartbeat_expire: float | None) -> int:
        """Bring a worker declared lost back to running (``rejoin.lua``).

        Returns:
            1 if it was running already, 2 if it came back (with a fresh
            heartbeat when ``heartbeat_expire`` is given), 0 if it must stop
            (killed, terminated, or its records are gone).

        """
        return await self.run(wc.rejoin(self.keys, worker_id, heartbeat_expire))

    async def mark_crashed(self, worker_id: str, reason: str) -> bool:
        """Record that a running worker's process ended in a crash; lost-worker detection settles it.

        The worker stays in the running set (it did not stop cleanly, so it
        must be found lost and, by a controller that started it, replaced),
        its heartbeat key goes at once, and the hash field ``crashed`` tells
        every detector, on any host, why. ``False`` (nothing written) if the
        worker was not running.
        """
        return await self.run(wc.crashed(self.keys, worker_id, reason))

    async def beat(self, worker_id: str, expire: float) -> bool:
        """Refresh the worker's heartbeat key; ``False`` if the worker is not running."""
        return await self.run(wc.heartbeat(self.keys, worker_id, expire))

    async def set_worker_state(self, worker_id: str, state: WorkerState) -> bool:
        """Move a running worker to ``state``; ``False`` (nothing written) if it was not running."""
        return await self.run(wc.worker_state(self.keys, worker_id, state))

    async def running_worker_flags(self, worker_ids: Sequence[str]) -> list[bool]:
        """Whether each worker id is in the running set."""
        if not worker_ids:
            return []
        return [bool(x) for x in await self.client.smismember(self.keys.running_workers, list(worker_ids))]

    async def worker_infos(self, worker_ids: Sequence[str] | None = None) -> list[WorkerInfo]:
        """Registration data of the given (default: all) workers that exist."""
        ids = list(worker_ids) if worker_ids is not None else await self.worker_ids()
        if not ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for wid in ids:
                pipe.hgetall(self.keys.worker(wid))
            raw = await pipe.execute()
        out = []
        for wid, h in zip(ids, raw, strict=True):
            if not h:
                continue
            data = decode_hash(h)
            out.append(
                WorkerInfo(
                    worker_id=wid,
                    state=WorkerState(data.pop("state", "running")),
                    pid=data.pop("pid", None),
                    hostname=data.pop("hostname", None),
                    started_at=data.pop("started_at", None),
                    heartbeat=bool(data.pop("heartbeat", False)),
                    extra=data,
                )
            )
        return out

    async def set_last_error(self, worker_id: str, condition: Condition) -> bool:
        """Record the worker's latest error (field ``last_error``: the condition and ``at``, UTC).

        Shown by ``worker_info()``. Written only while the worker is
        registered (a reset network gets no stray hash); returns whether it was.
        """
        value = {**condition.to_dict(), "at": dt.datetime.now(dt.UTC)}
        return await set_fields_if_registered(self, worker_id, {"last_error": value})

    async def worker_rows(self, worker_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One row per worker for ``worker_info()``, in one round trip after the id list.

        Columns: ``worker_id``, ``state``, ``pid``, ``hostname``, ``started_at``,
        ``last_beat`` (UTC time of the last heartbeat: server time minus how
        much of the heartbeat expiry has passed; ``None`` without a live
        heartbeat key), ``n_finished``, ``n_failed``, ``running`` (sorted keys
        of the worker's running set), ``last_error`` (condition mapping with
        ``at``, or ``None``), ``heartbeat``, then the other fields of its hash.
        """
        ids = list(worker_ids) if worker_ids is not None else await self.worker_ids()
        if not ids:
            return []
        k = self.keys
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.time()
            for wid in ids:
                pipe.hgetall(k.worker(wid))
                pipe.pttl(k.heartbeat(wid))
                pipe.smembers(k.worker_running(wid))
            raw = await pipe.execute()
        seconds, micros = raw[0]
        now = int(seconds) + int(micros) / 1e6
        rows = []
        for i, wid in enumerate(ids):
            h, pttl, running = raw[1 + 3 * i : 4 + 3 * i]
            if not h:
                continue
            data = decode_hash(h)
            expire = data.get("heartbeat_expire")
            last_beat = None
            if int(pttl) > 0 and isinstance(expire, (int, float)):
                last_beat = dt.datetime.fromtimestamp(now - (expire - int(pttl) / 1000), dt.UTC)
            rows.append(
                {
                    "worker_id": wid,
                    "state": str(data.pop("state", "running")),
                    "pid": data.pop("pid", None),
                    "hostname": data.pop("hostname", None),
                    "started_at": data.pop("started_at", None),
                    "last_beat": last_beat,
                    "n_finished": data.pop("n_finished", 0),
                    "n_failed": data.pop("n_failed", 0),
                    "running": sorted(text(running)),
                    "last_error": data.pop("last_error", None),
                    "heartbeat": bool(data.pop("heartbeat", False)),
                    **data,
                }
            )
        return rows

    async def heartbeats_alive(self, worker_ids: Sequence[str]) -> list[bool]:
        """Whether each worker's heartbeat key exists (one pipelined round trip)."""
        if not worker_ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.exists(self.keys.heartbeat(wid))
            raw = await pipe.execute()
        return [int(x) > 0 for x in raw]

    async def publish_event(self, kind: bytes) -> None:
        """Publish ``kind`` on the events channel, heard by every client (``R``: a reset)."""
        await self.publish(self.client, self.keys.events, kind)

    async def publish_worker_change(self) -> None:
        """Wake ``wait_for_workers`` callers: a worker registered, left, or was settled."""
        await self.publish(self.client, self.keys.worker_events, b"W")

    # -- stop requests ------------------------------------------------------------------
    async def request_terminate(self, worker_ids: Sequence[str]) -> None:
        """Set each worker's terminate key and publish on it: the worker stops after its tasks."""
        await self._signal([self.keys.terminate_signal(w) for w in worker_ids], b"terminate")

    async def request_kill(self, worker_ids: Sequence[str]) -> None:
        """Set each worker's kill key and publish on it: the worker stops at once."""
        await self._signal([self.keys.kill_signal(w) for w in worker_ids], b"kill")

    async def _signal(self, names: Sequence[str], message: bytes) -> None:
        # The key is the record (read on registration and after a lost
        # subscription); the message wakes a worker that listens now.
        if not names:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.set(name, b"1")
                self.publish(pipe, name, message)
            await pipe.execute()

    async def request_terminate_all(self) -> None:
        """Ask every worker of the network, present and future, to exit once the queue is empty."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.terminate_all, b"1")
            self.publish(pipe, self.keys.terminate_all, b"terminate")
            await pipe.execute()

    async def stop_requests(self, worker_id: str) -> tuple[bool, bool, bool]:
        """Which stop requests exist: ``(terminate this worker, drain and terminate all, kill)``."""
        k = self.keys
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.exists(k.terminate_signal(worker_id))
            pipe.exists(k.terminate_all)
            pipe.exists(k.kill_signal(worker_id))
            raw = await pipe.execute()
        own, drain, kill = (int(x) > 0 for x in raw)
        return own, drain, kill

    async def kill_requested(self, worker_id: str) -> bool:
        """Whether the worker was asked to stop at once."""
        return int(await self.client.exists(self.keys.kill_signal(worker_id))) > 0

    # -- start arguments --------------------------------------------------------------------
    async def set_start_args(self, args: Mapping[str, Any]) -> None:
        """Store the arguments that ``python -m rushpy.worker`` uses without ``--fun``."""
        await self.client.set(self.keys.start_args, encode(dict(args)))

    async def get_start_args(self) -> dict[str, Any] | None:
        """The stored start arguments, or ``None``."""
        raw = await self.client.get(self.keys.start_args)
        return None if raw is None else dict(decode(raw if isinstance(raw, bytes) else raw.encode()))
