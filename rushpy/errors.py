"""The one exception hierarchy of rushpy.

Every error raised on purpose by rushpy derives from :class:`RushError`, so
callers can catch the whole family with one ``except`` clause. Messages name
the offending value and say how to fix it. No raw ``redis.exceptions`` error
reaches a user: connection, timeout, authentication and protocol errors become
:class:`ConnectionFailedError`, error replies :class:`ServerError`.

The tree (a builtin in brackets is a second base, so ``except ValueError``
and friends keep working)::

    RushError
    ├── ConfigError [ValueError]           a setting or argument is invalid (URL,
    │                                      duration, count, id)
    ├── ConnectionFailedError [ConnectionError]
    │                                      server unreachable past the reconnect
    │                                      budget, refused the credentials, or
    │                                      not speaking the Redis protocol
    ├── ServerError                        the server answered with an error
    ├── EmbeddedServerError                no server binary, or it did not start
    ├── TaskError [ValueError]             task input is invalid (types, lengths,
    │   │                                  values that cannot round-trip)
    │   └── UnknownTaskError [KeyError]    a key is not a task of the network
    ├── WorkerError                        worker-side problem
    │   ├── UnknownWorkerError [KeyError]  a worker id is not registered
    │   ├── WorkerFunctionError [ValueError]
    │   │                                  the function cannot be imported or called
    │   ├── WorkerNotRunningError          the worker was declared lost or stopped
    │   └── NoStartArgumentsError          no function given and none stored
    ├── WorkerTimeoutError [TimeoutError]  workers did not register in time
    └── TaskTimeoutError [TimeoutError]    tasks did not finish in time

``ConnectionFailedError`` is an ``OSError`` (through ``ConnectionError``):
code that retries transient ``OSError`` (the worker loop) keeps retrying it.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConnectionFailedError",
    "EmbeddedServerError",
    "NoStartArgumentsError",
    "RushError",
    "ServerError",
    "TaskError",
    "UnknownTaskError",
    "UnknownWorkerError",
    "WorkerError",
    "WorkerFunctionError",
    "WorkerNotRunningError",
    "WorkerTimeoutError",
    "TaskTimeoutError",
]


class RushError(Exception):
    """Root of every error rushpy raises on purpose."""


class ConfigError(RushError, ValueError):
    """A configuration value is invalid (bad URL, negative duration, ...)."""


class ConnectionFailedError(RushError, ConnectionError):
    """The Redis-compatible server cannot be reached or refused the client."""


class ServerError(RushError):
    """The server answered a command with an error (script error, out of memory, wrong key type)."""


class EmbeddedServerError(RushError):
    """The embedded Redis-compatible server could not be found or started."""


class TaskError(RushError, ValueError):
    """Task input is invalid (wrong type, mismatched lengths, bad state name)."""


class UnknownTaskError(TaskError, KeyError):
    """A task key does not exist in the network."""

    def __str__(self) -> str:
        # KeyError quotes its argument; keep the readable message instead.
        return str(self.args[0]) if self.args else ""


class WorkerError(RushError):
    """A worker-side problem (registration, bad worker id, ...)."""


class UnknownWorkerError(WorkerError, KeyError):
    """A worker id is not registered in the network."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WorkerFunctionError(WorkerError, ValueError):
    """The function given to workers cannot be imported or has a bad signature."""


class WorkerNotRunningError(WorkerError):
    """The worker no longer counts as running in its network (declared lost, or stopped).

    Its tasks may have been re-queued for other workers; it must stop.
    """


class NoStartArgumentsError(WorkerError):
    """A worker was started without ``--fun`` and the network stores no start arguments."""


class WorkerTimeoutError(RushError, TimeoutError):
    """Workers did not register before the deadline of ``wait_for_workers``."""


class TaskTimeoutError(RushError, TimeoutError):
    """Tasks did not reach a final state before the deadline of ``wait_for_tasks``."""
