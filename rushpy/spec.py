"""What a worker process is started with: :class:`WorkerSpec`.

One frozen model describes a worker process: the network it joins, the
function it runs and its options. It is the single place where the worker
command line is built (:meth:`WorkerSpec.to_argv`) and parsed
(:meth:`WorkerSpec.add_arguments`, :meth:`WorkerSpec.from_namespace`,
:meth:`WorkerSpec.from_argv`), and where the start arguments that
``Controller.start_local_workers`` stores for the network are written
(:meth:`WorkerSpec.signed_start_args`) and read (:meth:`WorkerSpec.from_start_args`,
:meth:`WorkerSpec.resolve`). Stored start arguments are run only if a
:class:`~rushpy.signing.StartArgsPolicy` accepts them (signed with a key the
process holds, or naming functions of allowed modules): :meth:`WorkerSpec.resolve`
takes the policy, so no caller can skip the check.

The server URL is not part of the spec: it may carry a password, and a spec
ends up on command lines and in Redis. Local workers get the URL through the
``RUSHPY_REDIS_URL`` environment variable; ``worker_script`` prints ``--url``
without the password.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NoReturn

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator, model_validator

from rushpy.config import heartbeat_settings, validate_identifier
from rushpy.errors import ConfigError, NoStartArgumentsError, RushError
from rushpy.functions import function_path
from rushpy.keys import DEFAULT_PREFIX
from rushpy.loop_args import check_loop_args, parse_loop_args
from rushpy.signing import SigningKey, StartArgsPolicy, Where, sign_start_args
from rushpy.validation import check_positive_seconds

__all__ = ["LOG_LEVELS", "WorkerSpec"]

LOG_LEVELS = ("debug", "info", "warning", "error")
"""Log levels a worker accepts (``--log-level``)."""

# Fields stored as the network's start arguments: everything but the identity
# of one process (network, prefix, worker id) and how long it waits for them.
_STORED = ("fun", "concurrency", "heartbeat_period", "heartbeat_expire", "idle_timeout", "log_level")
# Stored too, but only for a worker loop: start arguments of a function stay as
# older workers know them.
_STORED_LOOP = ("worker_loop", "loop_args")
_HEARTBEAT = ("heartbeat_period", "heartbeat_expire")


class _RaisingParser(argparse.ArgumentParser):
    """A parser that raises :class:`ConfigError` instead of exiting (for :meth:`WorkerSpec.from_argv`)."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"invalid worker arguments: {message}")


class WorkerSpec(BaseModel):
    """Everything a worker process is started with, except the server URL.

    Attributes:
        network_id: Id of the network to join (``--network``).
        prefix: First component of every key (``--prefix``).
        fun: Function to run, ``module:function`` or ``file.py:function``
            (``--fun``); ``None``: take it from the network's stored start arguments.
        worker_loop: Worker loop to run instead of a function (``--worker-loop``):
            ``async def loop(worker, **loop_args)`` (decentralized mode).
        loop_args: Keyword arguments of the worker loop: plain data (``None``,
            bools, numbers, strings, lists, mappings with string keys), given
            as ``--loop-arg NAME=JSON``.
        concurrency: Tasks in flight at once (``--concurrency``).
        heartbeat_period: Seconds between heartbeats; ``None``: no heartbeat.
        heartbeat_expire: Seconds until the heartbeat key expires (default three periods).
        idle_timeout: Exit once the queue stayed empty this many seconds; ``None``: never.
        log_level: ``debug``, ``info``, ``warning`` or ``error``.
        worker_id: Id to register under; ``None``: a generated one.
        wait_for_start_args: Seconds a worker without ``fun`` waits for the
            controller to store start arguments (``0``: fail at once, ``inf``:
            wait without limit). Lets operators start workers before the controller.
        allow_pickle: Accept signed pickled callables of ``rushpy.Executor(pickle=True)``
            (``--allow-pickle``); an operator's choice, never stored in the network.
        workers_per_process: Workers this process runs as coroutines, each
            registered on its own (``--workers-per-process``); with
            ``worker_id``, they register as ``<id>-1``, ``<id>-2``, ...

    Fields given explicitly (``model_fields_set``) take precedence over the stored
    start arguments in :meth:`resolve`, and only they appear in :meth:`to_argv`.

    Raises:
        ConfigError: a value is invalid; the message names it and the fix.
        WorkerFunctionError: ``fun`` is not a ``module:function`` path.

    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    network_id: str
    prefix: str = DEFAULT_PREFIX
    fun: str | None = None
    worker_loop: str | None = None
    loop_args: dict[str, Any] = {}  # pydantic copies the default per instance
    concurrency: int = 1
    heartbeat_period: float | None = None
    heartbeat_expire: float | None = None
    idle_timeout: float | None = None
    log_level: str = "warning"
    worker_id: str | None = None
    wait_for_start_args: float = 0.0
    allow_pickle: bool = False
    workers_per_process: int = 1

    # Flag name of each field (the rest is derived: ``--`` + field name with dashes).
    _FLAGS: ClassVar[dict[str, str]] = {"network_id": "--network"}

    def __init__(self, **data: Any) -> None:
        """Validate the fields; a bad value raises a :class:`~rushpy.errors.RushError` naming it."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _rush_error(exc) from None

    # -- validation ----------------------------------------------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _heartbeat(cls, data: Any) -> Any:
        # Normalise the pair once (expire defaults to three periods), so every
        # consumer of a spec sees both values or neither.
        if isinstance(data, dict) and (
            data.get("heartbeat_period") is not None or data.get("heartbeat_expire") is not None
        ):
            settings = heartbeat_settings(data.get("heartbeat_period"), data.get("heartbeat_expire"))
            assert settings is not None  # at least one of the two is set
            data = {**data, "heartbeat_period": settings[0], "heartbeat_expire": settings[1]}
        return data

    @field_validator("network_id")
    @classmethod
    def _network(cls, value: str) -> str:
        return validate_identifier(value, "network id")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return validate_identifier(value, "key prefix")

    @field_validator("worker_id")
    @classmethod
    def _worker_id(cls, value: str | None) -> str | None:
        return None if value is None else validate_identifier(value, "worker id")

    @field_validator("fun")
    @classmethod
    def _fun(cls, value: str | None) -> str | None:
        return None if value is None else function_path(value)

    @field_validator("worker_loop")
    @classmethod
    def _worker_loop(cls, value: str | None) -> str | None:
        return None if value is None else function_path(value)

    @field_validator("loop_args")
    @classmethod
    def _loop_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_loop_args(value)

    @model_validator(mode="after")
    def _code(self) -> WorkerSpec:
        # Unresolved specs (neither fun nor worker_loop) may carry loop arguments:
        # they override the stored ones of a loop.
        if self.fun is not None and self.worker_loop is not None:
            raise ConfigError(
                f"both fun={self.fun!r} and worker_loop={self.worker_loop!r} given: a worker runs "
                "either a function on popped tasks or its own loop; pass one of them"
            )
        if self.fun is not None and self.loop_args:
            raise ConfigError(
                f"loop arguments {sorted(self.loop_args)} given with fun={self.fun!r}: they are "
                "passed to a worker loop only; pass worker_loop= (or --worker-loop) instead of fun"
            )
        if self.worker_loop is not None and self.concurrency != 1:
            raise ConfigError(
                f"invalid concurrency={self.concurrency} with worker_loop={self.worker_loop!r}: a "
                "worker runs its loop once; start more workers for more parallelism"
            )
        if self.worker_loop is not None and self.idle_timeout is not None:
            raise ConfigError(
                f"invalid idle_timeout={self.idle_timeout!r} with worker_loop={self.worker_loop!r}: "
                "a worker loop decides itself when it is done (it returns)"
            )
        return self

    @field_validator("concurrency", "workers_per_process")
    @classmethod
    def _at_least_one(cls, value: int, info: ValidationInfo) -> int:
        if value < 1:
            raise ConfigError(f"invalid {info.field_name}={value!r}: use an integer >= 1")
        return value

    @field_validator("idle_timeout")
    @classmethod
    def _idle_timeout(cls, value: float | None) -> float | None:
        return None if value is None else check_positive_seconds(value, "idle_timeout")

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value not in LOG_LEVELS:
            raise ConfigError(f"invalid log_level={value!r}: use one of {', '.join(LOG_LEVELS)}")
        return value

    @field_validator("wait_for_start_args")
    @classmethod
    def _wait(cls, value: float) -> float:
        if math.isnan(value) or value < 0:
            raise ConfigError(
                f"invalid wait_for_start_args={value!r}: use seconds >= 0 (0: do not wait, inf: no limit)"
            )
        return float(value)

    # -- command line --------------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the worker flags to ``parser``; every default is ``None`` (= not given)."""
        parser.add_argument("--network", dest="network_id", required=True, help="id of the network to join")
        parser.add_argument(
            "--fun",
            help="function to run, as module:function or file.py:function "
            "(default: the start arguments stored by the controller)",
        )
        parser.add_argument(
            "--worker-loop",
            help="worker loop to run instead of a function, as module:function or file.py:function: "
            "async def loop(worker, **loop_args) (decentralized mode)",
        )
        parser.add_argument(
            "--loop-arg",
            dest="loop_args",
            action="append",
            metavar="NAME=JSON",
            help="keyword argument of the worker loop, its value as JSON (repeatable)",
        )
        parser.add_argument("--worker-id", help="id to register under (default: generated)")
        parser.add_argument("--concurrency", type=int, help="tasks in flight at once (default: 1)")
        parser.add_argument(
            "--workers-per-process",
            type=int,
            metavar="N",
            help="run N workers as coroutines in this process, each registered (default: 1)",
        )
        parser.add_argument("--prefix", help=f"key prefix (default: {DEFAULT_PREFIX})")
        parser.add_argument(
            "--heartbeat-period", type=float, help="seconds between heartbeats (default: none)"
        )
        parser.add_argument(
            "--heartbeat-expire",
            type=float,
            help="seconds until the heartbeat key expires (default: 3 periods)",
        )
        parser.add_argument(
            "--idle-timeout",
            type=float,
            help="exit once the queue stayed empty for this many seconds (elastic pools)",
        )
        parser.add_argument("--log-level", choices=LOG_LEVELS, help="log level (default: warning)")
        parser.add_argument(
            "--wait-for-start-args",
            type=float,
            metavar="SECONDS",
            help="without --fun, wait this long for the controller to store start arguments "
            "(default: 0, fail at once; inf: no limit)",
        )
        parser.add_argument(
            "--allow-pickle",
            action="store_true",
            default=None,
            help="accept signed pickled callables of rushpy.Executor(pickle=True) "
            "(also RUSHPY_ALLOW_PICKLE=1; needs the signing key, see docs/executor.md)",
        )

    @classmethod
    def from_namespace(cls, options: argparse.Namespace) -> WorkerSpec:
        """The spec of parsed flags (see :meth:`add_arguments`); only given flags count as set."""
        values = {name: getattr(options, name, None) for name in cls.model_fields}
        if values["loop_args"] is not None:
            values["loop_args"] = parse_loop_args(values["loop_args"])
        return cls(**{name: value for name, value in values.items() if value is not None})

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> WorkerSpec:
        """Parse worker flags (the output of :meth:`to_argv`).

        Raises:
            ConfigError: unknown flag, missing ``--network`` or a bad value.

        """
        parser = _RaisingParser(prog="rushpy.worker", add_help=False)
        cls.add_arguments(parser)
        return cls.from_namespace(parser.parse_args(list(argv)))

    def worker_ids(self) -> list[str | None]:
        """Ids the process's workers register under: generated (``None``), ``worker_id``, or ``<id>-1``..."""
        n = self.workers_per_process
        if self.worker_id is None:
            return [None] * n
        return [self.worker_id] if n == 1 else [f"{self.worker_id}-{i + 1}" for i in range(n)]

    def to_argv(self) -> list[str]:
        """The worker flags of this spec: ``--network`` and every field given explicitly."""
        argv = ["--network", self.network_id]
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "network_id" or name not in self.model_fields_set or value is None:
                continue
            if isinstance(value, bool):  # a switch: the flag alone (``--allow-pickle``)
                argv += [self._FLAGS.get(name, "--" + name.replace("_", "-"))] if value else []
                continue
            if name == "loop_args":
                for arg, arg_value in value.items():
                    argv += ["--loop-arg", f"{arg}={json.dumps(arg_value, separators=(',', ':'))}"]
                continue
            flag = self._FLAGS.get(name, "--" + name.replace("_", "-"))
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
        return argv

    # -- stored start arguments ----------------------------------------------------------------
    def to_start_args(self) -> dict[str, Any]:
        """The start arguments to store for the network (a msgpack-able dict).

        Raises:
            ConfigError: the spec names no function and no worker loop.

        """
        if self.fun is None and self.worker_loop is None:
            raise ConfigError(
                "a worker spec without fun or worker_loop cannot be stored as start arguments: "
                "pass fun= or worker_loop="
            )
        names = _STORED if self.worker_loop is None else (*_STORED, *_STORED_LOOP)
        return {name: getattr(self, name) for name in names}

    def signed_start_args(self, key: SigningKey | None = None) -> dict[str, Any]:
        """:meth:`to_start_args` signed for this spec's network and prefix (what a controller stores).

        Args:
            key: Signing key (default :func:`rushpy.signing.signing_key`: the
                configured one, else this process's own).

        Raises:
            ConfigError: the spec names no function, or the configured key is invalid.

        """
        return sign_start_args(self.to_start_args(), self.network_id, prefix=self.prefix, key=key)

    @classmethod
    def from_start_args(
        cls, args: Mapping[str, Any], network_id: str, *, prefix: str = DEFAULT_PREFIX
    ) -> WorkerSpec:
        """The spec of stored start arguments for network ``network_id``.

        Keys this version does not know are ignored, so a newer controller's
        start arguments still start an older worker.
        """
        known = {name: args[name] for name in (*_STORED, *_STORED_LOOP) if args.get(name) is not None}
        return cls(network_id=network_id, prefix=prefix, **known)

    def resolve(
        self, stored: Mapping[str, Any] | None, policy: StartArgsPolicy, *, where: Where = "worker"
    ) -> WorkerSpec:
        """The spec to run: this one if it names a function or loop, else the stored start arguments.

        Stored start arguments are used only if ``policy`` accepts them (a
        function or loop named here needs no check: the operator chose it, and
        nothing stored is used then, not even loop arguments). Fields
        given explicitly here override the stored ones; the heartbeat period
        and expiry count as one setting (either flag replaces both).

        Args:
            stored: The network's stored start arguments (``None``: none stored).
            policy: Which stored start arguments this process accepts.
            where: Who asks (``worker`` or ``controller``): the refusal says what
                that one's operator can set.

        Raises:
            NoStartArgumentsError: no function here and none stored.
            UntrustedCodeError: the policy refuses the stored start arguments.

        """
        if self.fun is not None or self.worker_loop is not None:
            return self
        if not stored:
            raise NoStartArgumentsError(
                f"network {self.network_id!r} stores no start arguments and no --fun or --worker-loop "
                "was given: pass --fun module:function (or --worker-loop module:function), start "
                "workers once with Controller.start_local_workers(), or wait for them with "
                "--wait-for-start-args SECONDS"
            )
        policy.check(stored, self.network_id, prefix=self.prefix, where=where)
        base = self.from_start_args(stored, self.network_id, prefix=self.prefix)
        if base.fun is None and base.worker_loop is None:
            raise NoStartArgumentsError(
                f"the start arguments stored for network {self.network_id!r} name no function and "
                "no worker loop: pass --fun module:function or --worker-loop module:function"
            )
        values = {name: getattr(base, name) for name in type(base).model_fields}
        given = set(self.model_fields_set)
        if given & set(_HEARTBEAT):
            given |= set(_HEARTBEAT)
        values.update({name: getattr(self, name) for name in given})
        return type(self)(**values)


def _rush_error(exc: ValidationError) -> RushError:
    """The error to raise for a failed validation: the validator's own, else a ConfigError."""
    problems = []
    for err in exc.errors():
        original = (err.get("ctx") or {}).get("error")
        if isinstance(original, RushError):
            return original
        where = ".".join(str(p) for p in err["loc"]) or "worker spec"
        problems.append(f"{where}={err.get('input')!r}: {err['msg']}")
    return ConfigError("invalid worker spec: " + "; ".join(problems))
