"""The Lua scripts of every task state transition.

Each script is read once from its ``.lua`` file beside this module, with the
shared helpers of ``prelude.lua`` prepended, hashed locally, loaded into the
server once per client (``SCRIPT LOAD``) and run by SHA (``EVALSHA``). A
server that lost its script cache (restart, ``SCRIPT FLUSH``) gets the script
loaded again transparently.

On a Redis Cluster the scripts publish on sharded channels (``SPUBLISH``):
each script then exists in two variants, told apart by their SHA, and the
store runs the one its server needs (:meth:`Script.variant`).

Callers do not build key and argument lists themselves: every script has one
typed wrapper in :mod:`rushpy.scripts.calls` that returns a :class:`Call`,
which runs alone (:meth:`Call.run`) or, with many others, in one pipeline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Generic, TypeVar

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

__all__ = ["PRELUDE", "SCRIPT_NAMES", "Call", "Script", "load_all", "script"]

T = TypeVar("T")

PRELUDE = "prelude"
"""File name (without ``.lua``) of the helpers prepended to every script."""

SCRIPT_NAMES = (
    "cancel",
    "claim",
    "complete",
    "crashed",
    "create",
    "dequeue",
    "heartbeat",
    "lookup",
    "pop",
    "read",
    "rejoin",
    "release",
    "requeue",
    "retry",
    "running",
    "states",
    "worker_state",
)
"""Names of the bundled scripts (file names without ``.lua``)."""


@dataclass(frozen=True, slots=True)
class Script:
    """One Lua script: its name, source (prelude included) and SHA1.

    Attributes:
        name: File name without extension.
        source: Lua source code as loaded: the prelude, then the script.
        sha: Hex SHA1 of the source, as ``EVALSHA`` expects.
        sharded: Whether the script publishes with ``SPUBLISH`` (a Redis
            Cluster) rather than ``PUBLISH``.

    """

    name: str
    source: str
    sha: str
    sharded: bool = False

    def variant(self, sharded: bool) -> Script:
        """The same script, publishing with ``SPUBLISH`` (``sharded``) or ``PUBLISH``."""
        return self if sharded == self.sharded else script(self.name, sharded=sharded)

    async def __call__(self, client: Redis, keys: list[str], args: list[Any]) -> Any:
        """Run the script by SHA, loading it first if the server does not know it."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One prepared script call: what to send and how to read the reply.

    Built by the wrappers of :mod:`rushpy.scripts.calls`, which own each
    script's ``KEYS``/``ARGV`` layout. Run it alone with :meth:`run`, or send
    many in one pipeline (``script``, ``keys``, ``args``) and pass each raw
    reply to ``parse``.

    Attributes:
        script: The script to run.
        keys: Its ``KEYS``.
        args: Its ``ARGV``.
        parse: Turns the raw reply into the typed result.

    """

    script: Script
    keys: list[str]
    args: list[Any]
    parse: Callable[[Any], T]

    async def run(self, client: Redis, *, sharded: bool = False) -> T:
        """Run the call on ``client`` (``sharded``: a cluster) and return its parsed reply."""
        return self.parse(await self.script.variant(sharded)(client, self.keys, self.args))


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


_PUBLISH = 'local PUBLISH = "PUBLISH"\n'
_SPUBLISH = 'local PUBLISH = "SPUBLISH"\n'


def script(name: str, *, sharded: bool = False) -> Script:
    """Return the bundled script ``name``, prelude included (cached after the first read).

    Args:
        name: The script's file name without ``.lua``.
        sharded: The variant publishing with ``SPUBLISH``, for a Redis Cluster.

    """
    return _script(name, sharded)


@cache
def _script(name: str, sharded: bool) -> Script:
    prelude = _read(PRELUDE)
    if sharded:
        if _PUBLISH not in prelude:
            raise AssertionError(f"{PRELUDE}.lua no longer defines {_PUBLISH.strip()!r}")
        prelude = prelude.replace(_PUBLISH, _SPUBLISH, 1)
    source = prelude + "\n" + _read(name)
    sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - EVALSHA names scripts by SHA1
    return Script(name, source, sha, sharded)


async def load_all(client: Redis, *, sharded: bool = False) -> None:
    """Register every bundled script on the server in one round trip.

    Pipelines run scripts by SHA only, so they need the scripts loaded first.
    ``sharded`` loads the variants of a Redis Cluster (``SPUBLISH``).
    """
    async with client.pipeline(transaction=False) as pipe:
        for name in SCRIPT_NAMES:
            pipe.script_load(script(name, sharded=sharded).source)
        await pipe.execute()
