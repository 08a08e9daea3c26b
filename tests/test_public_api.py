"""The public surface of ``rushpy``: what ``__all__`` promises, and that it keeps its promise."""

from __future__ import annotations

import importlib.metadata

import rushpy
import rushpy.errors

EXPECTED = [
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


def test_all_is_the_expected_list() -> None:
    # A change of the public surface is deliberate: update EXPECTED with it.
    assert rushpy.__all__ == EXPECTED


def test_all_is_sorted() -> None:
    assert rushpy.__all__ == sorted(rushpy.__all__)


def test_every_name_exists_and_is_documented() -> None:
    for name in rushpy.__all__:
        assert hasattr(rushpy, name), name
        if name == "__version__":
            continue
        doc = getattr(rushpy, name).__doc__
        assert doc and doc.strip(), f"rushpy.{name} has no docstring"


def test_version_comes_from_the_package_metadata() -> None:
    assert rushpy.__version__ == importlib.metadata.version("rushpy")


def test_every_error_is_public_and_in_the_drawn_tree() -> None:
    doc = rushpy.errors.__doc__ or ""
    for name in rushpy.errors.__all__:
        error = getattr(rushpy.errors, name)
        assert issubclass(error, rushpy.errors.RushError), name
        assert name in rushpy.__all__, f"{name} is not re-exported by rushpy"
        assert f" {name}" in doc, f"{name} is missing from the tree in rushpy.errors"
