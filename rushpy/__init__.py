"""rushpy: asyncio-native distributed task networks on Redis, modelled on R's rush."""

from importlib.metadata import PackageNotFoundError, version

from rushpy.archive import ArchiveSummary
from rushpy.config import RedisConfig
from rushpy.controller import Controller, LocalWorker, StopResult
from rushpy.errors import (
    ConfigError,
    ConnectionFailedError,
    EmbeddedServerError,
    ExecutorShutdownError,
    NoStartArgumentsError,
    PermissionDeniedError,
    RemoteError,
    RushError,
    ServerError,
    ServerFullError,
    TaskError,
    TaskTimeoutError,
    UnknownTaskError,
    UnknownWorkerError,
    UntrustedCodeError,
    WorkerError,
    WorkerFunctionError,
    WorkerNotRunningError,
    WorkerTimeoutError,
)
from rushpy.executor import Executor
from rushpy.models import Condition, PoppedTask, TaskState, WorkerInfo, WorkerState
from rushpy.server import EmbeddedServer
from rushpy.store import NetworkStatus
from rushpy.table import Table
from rushpy.worker import Worker, run_function, run_worker_loop

try:
    __version__ = version("rushpy")
    """Version of the installed package (from its metadata)."""
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0.0.0+unknown"

__all__ = [
    "ArchiveSummary",
    "Condition",
    "ConfigError",
    "ConnectionFailedError",
    "Controller",
    "EmbeddedServer",
    "EmbeddedServerError",
    "Executor",
    "ExecutorShutdownError",
    "LocalWorker",
    "NetworkStatus",
    "NoStartArgumentsError",
    "PermissionDeniedError",
    "PoppedTask",
    "RedisConfig",
    "RemoteError",
    "RushError",
    "ServerError",
    "ServerFullError",
    "StopResult",
    "Table",
    "TaskError",
    "TaskState",
    "TaskTimeoutError",
    "UnknownTaskError",
    "UnknownWorkerError",
    "UntrustedCodeError",
    "Worker",
    "WorkerError",
    "WorkerFunctionError",
    "WorkerInfo",
    "WorkerNotRunningError",
    "WorkerState",
    "WorkerTimeoutError",
    "__version__",
    "run_function",
    "run_worker_loop",
]
