"""Server administration for a network's owner: the snapshot (save) policy and ``INFO``.

These are the only server-wide commands rushpy sends. ``CONFIG`` is often
renamed, disabled or denied to ACL users (``-@dangerous``); a refusal becomes
a :class:`~rushpy.errors.ServerError` that says so and what to do instead.
"""

from __future__ import annotations

from typing import Any

from rushpy.errors import ServerError
from rushpy.store.base import Plumbing

__all__ = ["INFO_SECTIONS", "server_info", "set_save_policy"]

INFO_SECTIONS = (
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "keyspace",
)
"""The ``INFO`` sections :func:`server_info` reads."""


async def set_save_policy(store: Plumbing, rules: list[tuple[int, int]]) -> None:
    """``CONFIG SET save``: snapshot after ``seconds`` if at least ``changes`` writes, per rule.

    An empty list turns snapshots off.

    Raises:
        ServerError: the server refused ``CONFIG SET`` (renamed, disabled, or not
            allowed for this user), naming the setting to put in its configuration file.

    """
    value = " ".join(f"{seconds} {changes}" for seconds, changes in rules)
    try:
        await store.client.config_set("save", value)
    except ServerError as exc:
        raise ServerError(
            f"the server refused CONFIG SET save {value!r} ({exc.__cause__ or exc}): CONFIG is renamed, "
            "disabled or not allowed for this user (ACL -@dangerous); put the line "
            f"'save {value}' in the server's configuration file instead"
        ) from None


async def server_info(store: Plumbing) -> dict[str, dict[str, Any]]:
    """``INFO`` of the server by section, in one round trip (``INFO`` holds no password).

    A section the server refuses (an ACL user denied ``INFO``) is left out.
    """
    async with store.client.pipeline(transaction=False) as pipe:
        for section in INFO_SECTIONS:
            pipe.info(section)
        replies = await pipe.execute(raise_on_error=False)
    out: dict[str, dict[str, Any]] = {}
    for section, reply in zip(INFO_SECTIONS, replies, strict=True):
        if isinstance(reply, dict):
            out[section] = {str(k): v for k, v in reply.items()}
    return out
