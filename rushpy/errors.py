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
    │   │                                  duration, count, id)
    │   └── UntrustedCodeError             stored start arguments that the operator
    │                                      did not allow (unsigned, bad signature)
    ├── ConnectionFailedError [ConnectionError]
    │                                      server unreachable past the reconnect
    │                                      budget, refused the credentials, or
    │                                      not speaking the Redis protocol
    ├── ServerError                        the server answered with an error
    │   ├── ServerFullError                out of memory (maxmemory) and refused a write
    │   └── PermissionDeniedError          an ACL user may not run a command rushpy needs
    ├── EmbeddedServerError                no server binary, or it did not start
    ├── TaskError [ValueError]             task input is invalid (types, lengths,
    │   │                                  values that cannot round-trip)
    │   └── UnknownTaskError [KeyError]    a key is not a task of the network
    ├── WorkerError                        worker-side problem
    │   ├── UnknownWorkerError [KeyError]  a worker id is not registered
    │   ├── WorkerFunctionError [ValueError]
    │   │                                  the function cannot be imported or called
    │   ├── WorkerNotRunningError          the worker was declared lost or stopped
    │   ├── NoStartArgumentsError          no function given and none stored
    │   └── RemoteError                    an Executor task raised an exception of
    │                                      a type not re-creatable by the caller
    ├── ExecutorShutdownError [RuntimeError]
    │                                      work submitted after Executor.shutdown()
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
    "RemoteError",
    "ExecutorShutdownError",
    "RushError",
    "ServerError",
    "ServerFullError",
    "PermissionDeniedError",
    "TaskError",
    "UnknownTaskError",
    "UnknownWorkerError",
    "UntrustedCodeError",
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


class UntrustedCodeError(ConfigError):
    """Stored start arguments name code that this process's operator did not allow.

    They are run only when signed with a key the process holds
    (``RUSHPY_SIGNING_KEY``) or when their functions lie in allowed modules
    (``--allow-module``, ``RUSHPY_ALLOW_MODULES``); see ``docs/security.md``.
    """


class ConnectionFailedError(RushError, ConnectionError):
    """The Redis-compatible server cannot be reached or refused the client."""


class ServerError(RushError):
    """The server answered a command with an error (script error, out of memory, wrong key type)."""


class PermissionDeniedError(ServerError):
    """The server refused a command (or a script's command) to this ACL user.

    The user lacks a permission rushpy needs, or the key belongs to another
    network; ``rushpy acl NETWORK --user USER`` prints the rules to give it.
    """


class ServerFullError(ServerError):
    """The server reached its ``maxmemory`` limit and refused a write (``OOM`` reply).

    Nothing of the refused command was written (scripts are refused before
    their first write, a push as a whole). Workers wait and retry until
    memory is freed; free memory (``reset()`` finished networks, delete other
    data) or raise the server's ``maxmemory``.
    """


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


class RemoteError(WorkerError):
    """A task of :class:`rushpy.Executor` failed on its worker with an exception not re-creatable here.

    Its ``__cause__`` holds the worker's traceback; ``condition`` the stored failure.
    """


class ExecutorShutdownError(RushError, RuntimeError):
    """Work was submitted to a :class:`rushpy.Executor` after ``shutdown()``."""


class WorkerTimeoutError(RushError, TimeoutError):
    """Workers did not register before the deadline of ``wait_for_workers``."""


class TaskTimeoutError(RushError, TimeoutError):
    """Tasks did not reach a final state before the deadline of ``wait_for_tasks``."""
