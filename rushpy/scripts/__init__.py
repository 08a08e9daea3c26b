"""The Lua scripts of every task state transition.

Each script is read once from its ``.lua`` file beside this module, hashed
locally, loaded into the server once per client (``SCRIPT LOAD``) and run by
SHA (``EVALSHA``). A server that lost its script cache (restart, ``SCRIPT
FLUSH``) gets the script loaded again transparently.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

__all__ = ["SCRIPT_NAMES", "Script", "load_all", "script"]

SCRIPT_NAMES = (
    "cancel",
    "claim",
    "complete",
    "create",
    "dequeue",
    "heartbeat",
    "pop",
    "read",
    "release",
    "requeue",
    "retry",
    "running",
    "worker_state",
)
"""Names of the bundled scripts (file names without ``.lua``)."""


@dataclass(frozen=True, slots=True)
class Script:
    """One Lua script: its name, source and SHA1.

    Attributes:
        name: File name without extension.
        source: Lua source code.
        sha: Hex SHA1 of the source, as ``EVALSHA`` expects.

    """

    name: str
    source: str
    sha: str

    async def __call__(self, client: Redis, keys: list[str], args: list[Any]) -> Any:
        """Run the script by SHA, loading it first if the server does not know it."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


@cache
def script(name: str) -> Script:
    """Return the bundled script ``name`` (cached after the first read)."""
    source = resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
    sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - EVALSHA names scripts by SHA1
    return Script(name, source, sha)


async def load_all(client: Redis) -> None:
    """Register every bundled script on the server in one round trip.

    Pipelines run scripts by SHA only, so they need the scripts loaded first.
    """
    async with client.pipeline(transaction=False) as pipe:
        for name in SCRIPT_NAMES:
            pipe.script_load(script(name).source)
        await pipe.execute()
