"""Arguments of worker loops: plain data, checked once and carried on command lines.

A worker loop (``async def loop(worker, **loop_args)``) gets its keyword
arguments from the network's start arguments (msgpack, signed with the rest)
or from its command line (``--loop-arg NAME=JSON``, which is how a controller
starts its local workers). Both carry the same plain data, so values are
limited to what msgpack and JSON both represent, and checked where they are
given (``start_local_workers``), not where a worker process would fail on them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from rushpy.errors import ConfigError

__all__ = ["check_code_choice", "check_loop_args", "parse_loop_args"]

_MSGPACK_INT = (-(2**63), 2**64 - 1)


def check_loop_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """Check worker-loop arguments and return them as plain data (tuples become lists).

    Names must be Python identifiers other than ``worker`` (the loop's first
    parameter); values plain data that msgpack and JSON both carry: ``None``,
    bools, integers that fit in 64 bits, floats, strings, lists (or tuples)
    and mappings with string keys, nested.

    Raises:
        ConfigError: a name or value that is not allowed; the message names it.

    """
    checked = {}
    for name, value in args.items():
        if not isinstance(name, str) or not name.isidentifier() or name == "worker":
            raise ConfigError(
                f"invalid loop argument name {name!r}: use a Python identifier other than 'worker' "
                "(the loop is called as loop(worker, **loop_args))"
            )
        checked[name] = _plain(value, name)
    return checked


def _plain(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int):
        if not _MSGPACK_INT[0] <= value <= _MSGPACK_INT[1]:
            raise ConfigError(f"invalid loop argument {where}={value!r}: integers must fit in 64 bits")
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise ConfigError(
                    f"invalid loop argument {where}: key {key!r} is not a string; mappings in loop "
                    "arguments need string keys"
                )
            out[key] = _plain(v, f"{where}[{key!r}]")
        return out
    raise ConfigError(
        f"invalid loop argument {where}={value!r} ({type(value).__name__}): loop arguments are plain "
        "data (None, bool, int, float, str, lists and mappings with string keys), stored with the "
        "network's start arguments; pass anything else through tasks or build it in the loop"
    )


def parse_loop_args(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``NAME=JSON`` items (``--loop-arg``) into loop arguments; a later name wins.

    Raises:
        ConfigError: an item without ``=``, or a value that is not JSON.

    """
    args: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"invalid --loop-arg {item!r}: use NAME=JSON, e.g. n_evals=100 or name='\"a\"'")
        try:
            args[name] = json.loads(text)
        except ValueError as exc:
            raise ConfigError(
                f"invalid --loop-arg {item!r}: the value is not JSON ({exc}); quote strings: "
                f"{name}='\"{text}\"'"
            ) from None
    return args


def check_code_choice(fun: object, worker_loop: object, loop_args: Mapping[str, Any]) -> None:
    """At most one of ``fun`` and ``worker_loop``; loop arguments only with ``worker_loop``.

    Raises:
        ConfigError: both are given, or loop arguments come without ``worker_loop``.

    """
    if fun is not None and worker_loop is not None:
        raise ConfigError(
            "both fun= and worker_loop= given: a worker runs either a function on popped tasks or "
            "its own loop; pass one of them"
        )
    if loop_args and worker_loop is None:
        raise ConfigError(
            f"unexpected keyword arguments {sorted(loop_args)}: extra keyword arguments are the "
            "arguments of a worker loop and need worker_loop= (check the spelling of the options)"
        )
