"""rushpy: asyncio-native distributed task networks on Redis, modelled on R's rush."""

from rushpy.config import RedisConfig
from rushpy.controller import Controller, LocalWorker, StopResult
from rushpy.errors import (
    ConfigError,
    ConnectionFailedError,
    EmbeddedServerError,
    NoStartArgumentsError,
    RushError,
    TaskError,
    TaskTimeoutError,
    UnknownTaskError,
    UnknownWorkerError,
    WorkerError,
    WorkerFunctionError,
    WorkerTimeoutError,
)
from rushpy.models import Condition, PoppedTask, TaskState, WorkerInfo, WorkerState
from rushpy.server import EmbeddedServer
from rushpy.store import NetworkStatus
from rushpy.table import Table
from rushpy.worker import Worker, run_function

__version__ = "0.1.0"

__all__ = [
    "Condition",
    "ConfigError",
    "ConnectionFailedError",
    "Controller",
    "EmbeddedServer",
    "EmbeddedServerError",
    "LocalWorker",
    "NetworkStatus",
    "NoStartArgumentsError",
    "PoppedTask",
    "RedisConfig",
    "RushError",
    "StopResult",
    "Table",
    "TaskError",
    "TaskState",
    "TaskTimeoutError",
    "UnknownTaskError",
    "UnknownWorkerError",
    "Worker",
    "WorkerError",
    "WorkerFunctionError",
    "WorkerInfo",
    "WorkerState",
    "WorkerTimeoutError",
    "__version__",
    "run_function",
]
