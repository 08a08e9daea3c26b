"""Plain data types shared by the store, the controller and the worker."""

from __future__ import annotations

import traceback as tb
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "TASK_STATES",
    "Condition",
    "PoppedTask",
    "TaskState",
    "WorkerInfo",
    "WorkerState",
]


class TaskState(StrEnum):
    """The state a task is in; exactly one at any time."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


TASK_STATES: tuple[TaskState, ...] = tuple(TaskState)
"""All task states in life-cycle order."""


class WorkerState(StrEnum):
    """The state of a worker as recorded in the network."""

    RUNNING = "running"
    TERMINATED = "terminated"
    KILLED = "killed"
    LOST = "lost"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Condition:
    """Why a task failed.

    Attributes:
        type: Exception class name or a rushpy reason (``Cancelled``, ``Lost``, ...).
        message: Human-readable message.
        traceback: Formatted traceback, if the failure was an exception.

    """

    type: str
    message: str
    traceback: str | None = None

    @classmethod
    def from_exception(cls, exc: BaseException) -> Condition:
        """Build a condition from an exception, with its traceback."""
        return cls(
            type=type(exc).__name__,
            message=str(exc),
            traceback="".join(tb.format_exception(exc)),
        )

    @classmethod
    def coerce(cls, value: Condition | BaseException | Mapping[str, Any] | str) -> Condition:
        """Accept a condition, an exception, a mapping with ``message`` or a message string."""
        if isinstance(value, Condition):
            return value
        if isinstance(value, BaseException):
            return cls.from_exception(value)
        if isinstance(value, str):
            return cls(type="Error", message=value)
        if isinstance(value, Mapping) and "message" in value:
            return cls(
                type=str(value.get("type", "Error")),
                message=str(value["message"]),
                traceback=value.get("traceback"),
            )
        raise TypeError(
            f"invalid condition {value!r}: pass an exception, a message string, or a mapping "
            "with 'message' (and optionally 'type', 'traceback')"
        )

    def to_dict(self) -> dict[str, Any]:
        """Mapping form, as stored in Redis and shown in tables."""
        out: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.traceback is not None:
            out["traceback"] = self.traceback
        return out


@dataclass(frozen=True, slots=True)
class PoppedTask:
    """A task handed to a worker by :meth:`rushpy.Worker.pop_task`.

    Attributes:
        key: The task key.
        xs: Input mapping.
        xs_extra: Extra inputs stored with the task, if any.
        attempt: Which attempt this is (1 for the first run, 2 for the first retry, ...).
        timeout: Seconds the task may run, if it has a deadline.
        seed: The task's seed, if it has one.

    """

    key: str
    xs: dict[str, Any]
    xs_extra: dict[str, Any] | None = None
    attempt: int = 1
    timeout: float | None = None
    seed: Any = None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """Registration data of one worker.

    Attributes:
        worker_id: The worker's id.
        state: Its recorded state.
        pid: Process id on its host.
        hostname: Host it runs on.
        started_at: Registration time (Unix seconds).
        heartbeat: Whether it keeps a heartbeat key.
        extra: Other registration fields.

    """

    worker_id: str
    state: WorkerState
    pid: int | None
    hostname: str | None
    started_at: float | None
    heartbeat: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
