"""Least privilege: the ACL rules of a Redis user limited to one network.

A worker host, a web service or a team sharing a server needs only its own
network. :func:`acl_setuser` gives the ``ACL SETUSER`` line (Redis 6 and later,
Valkey) of a user that may touch that network's keys and channels only
(``~<prefix>:{<network>}:*``, ``&<prefix>:{<network>}:*``) and run only the
commands rushpy sends, directly or inside its Lua scripts (:data:`ACL_COMMANDS`).
Run it once as an administrator (``redis-cli < file``), or put its
``aclfile=True`` form in the server's ACL file, then give controllers and
workers ``redis://USER@host:port/0`` with the password in
``RUSHPY_REDIS_PASSWORD``.

Left out on purpose, because each reveals or changes the whole server:
``CONFIG`` (``CONFIG GET`` shows ``requirepass``; without it rushpy skips its
eviction-policy check and ``snapshot_schedule`` raises naming the setting to
configure), ``INFO`` (``redis_info`` leaves refused sections out), ``KEYS``,
``SCAN``, ``FLUSHALL``, ``ACL``. The password never appears in the rules as
text: only its SHA-256 (``#<hex>``), which the server accepts in its place.
"""

from __future__ import annotations

import hashlib
import re

from pydantic import SecretStr

from rushpy.errors import ConfigError
from rushpy.keys import DEFAULT_PREFIX, Keys

__all__ = ["ACL_CLUSTER_COMMANDS", "ACL_COMMANDS", "ENV_ACL_PASSWORD", "acl_rules", "acl_setuser"]

ENV_ACL_PASSWORD = "RUSHPY_ACL_PASSWORD"  # noqa: S105 (the variable's name, not a password)
"""Environment variable ``rushpy acl`` reads the new user's password from (never from argv)."""

ACL_COMMANDS = (
    # connection set-up (redis-py sends CLIENT SETNAME, and SELECT for a database other than 0;
    # CLIENT SETINFO, Redis 7.2+, may be refused: redis-py carries on without it)
    "ping",
    "hello",
    "select",
    "client|setname",
    "time",
    # on a Redis Cluster: who owns the network's slot after a failover (rushpy.connection.cluster)
    "cluster|slots",
    # scripts and transactions
    "evalsha",
    "script|load",
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    # pub/sub on the network's channels
    "publish",
    "subscribe",
    "unsubscribe",
    # the network's data (Python side and Lua scripts)
    "blmove",
    "del",
    "exists",
    "get",
    "hdel",
    "hexists",
    "hget",
    "hgetall",
    "hkeys",
    "hmget",
    "hset",
    "hsetnx",
    "incr",
    "incrby",
    "llen",
    "lpop",
    "lpos",
    "lpush",
    "lrange",
    "lrem",
    "mget",
    "pexpire",
    "pttl",
    "rpush",
    "sadd",
    "scard",
    "set",
    "setnx",
    "sismember",
    "smembers",
    "smismember",
    "smove",
    "srem",
    "sunion",
    "type",
    "unlink",
    "xadd",
    "xrange",
)
"""Every command rushpy sends for a network (``tests/test_acl.py`` runs a life cycle with these only)."""

ACL_CLUSTER_COMMANDS = ("spublish", "ssubscribe", "sunsubscribe")
"""Added on a Redis Cluster, where rushpy publishes on sharded channels (Redis 7.0+; unknown to 6.x)."""

_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")


def _check_username(username: str) -> str:
    if not isinstance(username, str) or not _USERNAME.fullmatch(username):
        raise ConfigError(
            f"invalid ACL user name {username!r}: use 1-128 characters from letters, digits, "
            "'_', '.', '@', '-', starting with a letter or digit"
        )
    return username


def acl_rules(
    network_id: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    password: str | SecretStr | None = None,
    cluster: bool = False,
) -> list[str]:
    """The ACL rules (tokens of ``ACL SETUSER``) of a user limited to network ``network_id``.

    Args:
        network_id: The network the user may use.
        prefix: The network's key prefix.
        password: The user's password; the rules hold only its SHA-256. Without
            one the rules give no password (the user cannot log in until one is
            added with ``>password`` or ``#sha256``).
        cluster: For a Redis Cluster: add the sharded pub/sub commands
            (:data:`ACL_CLUSTER_COMMANDS`). Set the user on every node.

    Raises:
        ConfigError: ``network_id`` or ``prefix`` is not a valid identifier, or the password is empty.

    """
    pattern = Keys(network_id, prefix).pattern
    rules = ["reset", "on"]
    if password is not None:
        secret = password.get_secret_value() if isinstance(password, SecretStr) else password
        if not secret:
            raise ConfigError("the ACL user's password is empty: give a non-empty password or none")
        rules.append("#" + hashlib.sha256(secret.encode()).hexdigest())
    rules += [f"~{pattern}", "resetchannels", f"&{pattern}", "-@all"]
    rules += [f"+{command}" for command in ACL_COMMANDS]
    if cluster:
        rules += [f"+{command}" for command in ACL_CLUSTER_COMMANDS]
    return rules


def acl_setuser(
    username: str,
    network_id: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    password: str | SecretStr | None = None,
    aclfile: bool = False,
    cluster: bool = False,
) -> str:
    """The user ``username``, limited to ``network_id`` (see :func:`acl_rules`), as one line.

    Args:
        username: The ACL user's name.
        network_id: The network the user may use.
        prefix: The network's key prefix.
        password: The user's password (only its SHA-256 is written), or none.
        aclfile: A line of the server's ACL file (``user <name> <rules>``)
            instead of an ``ACL SETUSER`` command.
        cluster: For a Redis Cluster (see :func:`acl_rules`).

    Raises:
        ConfigError: an invalid user name, network id, prefix or an empty password.

    """
    rules = acl_rules(network_id, prefix=prefix, password=password, cluster=cluster)
    # An ACL file starts from nothing: no "reset" there.
    head = ["user"] if aclfile else ["ACL", "SETUSER"]
    return " ".join([*head, _check_username(username), *(rules[1:] if aclfile else rules)])
