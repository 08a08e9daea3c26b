"""Connection settings for the Redis-compatible server.

:class:`RedisConfig` is a frozen pydantic model. Build it from arguments, from a
URL (:meth:`RedisConfig.from_url`) or from the environment
(:meth:`RedisConfig.from_env`: ``RUSHPY_REDIS_URL``, then ``REDIS_URL``, then
``redis://127.0.0.1:6379/0``). The password is a :class:`~pydantic.SecretStr`
and never appears in ``repr``, logs or generated command lines.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from rushpy.cluster_url import join_cluster_url, split_cluster_url
from rushpy.errors import ConfigError

__all__ = [
    "DEFAULT_HEALTH_CHECK_INTERVAL",
    "DEFAULT_RECONNECT_BUDGET",
    "DEFAULT_SOCKET_TIMEOUT",
    "DEFAULT_URL",
    "ENV_PASSWORD",
    "ENV_URL",
    "ENV_URL_FALLBACK",
    "MAX_HEARTBEAT_EXPIRE",
    "URL_OPTIONS",
    "TLS_OPTIONS",
    "RedisConfig",
    "configured_url",
    "heartbeat_settings",
    "validate_identifier",
]

ENV_URL = "RUSHPY_REDIS_URL"
"""First environment variable consulted for the server URL."""
ENV_URL_FALLBACK = "REDIS_URL"
"""Second environment variable consulted for the server URL."""
ENV_PASSWORD = "RUSHPY_REDIS_PASSWORD"  # noqa: S105 - a variable name, not a secret
"""Password used when the URL carries none; lets command lines stay password-free."""
DEFAULT_URL = "redis://127.0.0.1:6379/0"
"""URL used when neither argument nor environment names a server."""
DEFAULT_RECONNECT_BUDGET = 10.0
"""Default of :attr:`RedisConfig.reconnect_budget`: seconds of outage that clients ride out."""
DEFAULT_SOCKET_TIMEOUT = 30.0
"""Default of :attr:`RedisConfig.socket_timeout`: seconds to wait for the server's answer."""
DEFAULT_HEALTH_CHECK_INTERVAL = 5.0
"""Default of :attr:`RedisConfig.health_check_interval`: seconds of silence before a PING."""

_SCHEMES = ("redis", "rediss", "unix")

TLS_OPTIONS: tuple[str, ...] = (
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
)
"""The TLS fields of :class:`RedisConfig` (query parameters of ``rediss://`` URLs, as in redis-py)."""

URL_OPTIONS: tuple[str, ...] = (
    "reconnect_budget",
    "socket_timeout",
    "connect_timeout",
    "health_check_interval",
    *TLS_OPTIONS,
)
"""Fields of :class:`RedisConfig` that travel as URL query parameters.

:meth:`RedisConfig.to_url` with ``include_options=True`` writes those that
differ from their defaults and :meth:`RedisConfig.from_url` reads them back,
so a worker process started from a URL connects exactly as its controller.
"""
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def validate_identifier(value: object, what: str) -> str:
    """Check a network or worker id and return it.

    Ids become part of Redis key names, so braces (the Cluster hash tag), colons
    (the key separator) and white space are refused.

    Raises:
        ConfigError: the id is not 1-128 characters of letters, digits, ``_.-``.

    """
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ConfigError(
            f"invalid {what} {value!r}: use 1-128 characters from letters, digits, '_', '.', '-', "
            "starting with a letter or digit (no braces, colons or spaces)"
        )
    return value


class RedisConfig(BaseModel):
    """Where and how to connect to the Redis-compatible server.

    Attributes:
        scheme: ``redis`` (TCP), ``rediss`` (TCP with TLS) or ``unix`` (socket).
        host: Host name or address for TCP schemes.
        port: TCP port.
        path: Socket path for the ``unix`` scheme.
        db: Database number.
        username: ACL user name, if any.
        password: Password (kept secret).
        socket_timeout: Seconds to wait for the server's answer to a command
            (default 30) before the connection counts as broken: a hung server
            (stopped process, silent network partition) is noticed after this
            long. Blocking moves of idle workers block for at most two thirds
            of it, so their answer always comes in time.
        connect_timeout: Seconds to establish a connection (default 5).
        health_check_interval: Seconds of silence on the event subscription
            (default 5) after which it sends a ``PING``; no answer within
            ``socket_timeout`` counts as a lost subscription.
        ssl_cert_reqs: Server certificate check for ``rediss``: ``required``
            (default: the handshake fails unless a trusted CA signed it),
            ``optional`` (checked if sent) or ``none`` (not checked: encryption
            without authentication, open to a man in the middle).
        ssl_ca_certs: Path of the CA bundle (PEM) that signed the server's
            certificate (default: the system's trusted CAs).
        ssl_certfile: Path of this client's certificate (PEM), for servers that
            require client certificates (``tls-auth-clients yes``).
        ssl_keyfile: Path of the private key of ``ssl_certfile`` (unencrypted
            PEM; default: the key is in ``ssl_certfile``).
        ssl_check_hostname: Whether the server certificate must name the host
            connected to (default ``True``; ignored when ``ssl_cert_reqs`` is ``none``).
        cluster_nodes: Seed nodes (``host:port``) of a Redis Cluster; empty for
            one server. Set by a ``redis+cluster://`` (``rediss+cluster://``) URL,
            whose first node is also ``host`` and ``port``.
        reconnect_budget: Seconds of outage that clients ride out (default 10).
            A command that fails on a dropped connection, a timeout or a
            server restart is sent again on a fresh connection, with
            exponential backoff from 0.05 s capped at 1 s, until this many
            seconds have passed since its first failure; then
            :class:`~rushpy.errors.ConnectionFailedError` is raised. Waiting
            methods (``wait_for_tasks``, ``wait_for_new_tasks``,
            ``fetch_new_tasks(timeout=...)``, ``wait_for_workers``) raise it
            once the event subscription has been down this long, however long
            their own timeout. ``0`` fails at the first error.

    **Bounds against a hung server.** A method without a timeout raises
    :class:`~rushpy.errors.ConnectionFailedError` at most ``socket_timeout +
    reconnect_budget`` seconds (plus a backoff pause of at most 1 s) after it
    sent a command that got no answer; a wait without a timeout (``timeout=None``)
    at most ``health_check_interval + socket_timeout + reconnect_budget`` seconds
    (plus backoff) after the server stopped answering. A method with a timeout
    returns or raises within its timeout plus ``min(socket_timeout, 5)`` seconds
    (:data:`rushpy.deadline.DEADLINE_GRACE`): a command still unanswered then
    raises ``ConnectionFailedError``. Connecting (``async with Controller(...)``)
    fails within ``connect_timeout + socket_timeout``.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    scheme: Literal["redis", "rediss", "unix"] = "redis"
    host: str = "127.0.0.1"
    port: int = Field(default=6379, ge=1, le=65535)
    path: str | None = None
    db: int = Field(default=0, ge=0)
    username: str | None = None
    password: SecretStr | None = None
    socket_timeout: float = Field(default=DEFAULT_SOCKET_TIMEOUT, gt=0, allow_inf_nan=False)
    connect_timeout: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    health_check_interval: float = Field(default=DEFAULT_HEALTH_CHECK_INTERVAL, gt=0, allow_inf_nan=False)
    ssl_cert_reqs: Literal["required", "optional", "none"] = "required"
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True
    reconnect_budget: float = Field(default=DEFAULT_RECONNECT_BUDGET, ge=0, allow_inf_nan=False)
    cluster_nodes: tuple[str, ...] = ()

    def __init__(self, **data: Any) -> None:
        """Validate the fields; pydantic errors become :class:`ConfigError`."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_explain(exc)) from None

    @model_validator(mode="after")
    def _check_unix_path(self) -> RedisConfig:
        if self.scheme == "unix" and not self.path:
            raise ValueError("scheme 'unix' needs a socket path, e.g. unix:///tmp/redis.sock")
        return self

    @model_validator(mode="after")
    def _check_cluster(self) -> RedisConfig:
        if self.cluster_nodes and (self.scheme == "unix" or self.db != 0):
            raise ValueError(
                "a Redis Cluster has database 0 only and no unix sockets: use "
                "redis+cluster://host:port,host:port/0"
            )
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> RedisConfig:
        # TLS settings on a plain connection would be ignored: the user believes
        # the link is encrypted when it is not.
        changed = [n for n in TLS_OPTIONS if getattr(self, n) != type(self).model_fields[n].default]
        if changed and self.scheme != "rediss":
            raise ValueError(
                f"{', '.join(changed)} set but the scheme is {self.scheme!r}, which has no TLS: "
                "use a rediss:// URL (scheme='rediss')"
            )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError("ssl_keyfile needs ssl_certfile (the certificate the key belongs to)")
        return self

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> RedisConfig:
        """Parse a ``redis://``, ``rediss://`` or ``unix://`` URL.

        Forms: ``redis://[user[:password]@]host[:port][/db]``, ``rediss://...`` (TLS),
        ``unix:///path/to.sock[?db=N]``, and for a Redis Cluster
        ``redis+cluster://[user@]host:port,host:port/0`` (``rediss+cluster://``). Query parameters named in
        :data:`URL_OPTIONS` (``reconnect_budget=S``, ...) set those fields, so
        workers started from a URL get the same settings.

        A URL without a password takes it from ``RUSHPY_REDIS_PASSWORD`` when set.

        Raises:
            ConfigError: the URL is malformed; the message shows it (password masked).

        """
        if not isinstance(url, str) or not url.strip():
            raise ConfigError(f"invalid Redis URL {url!r}: expected e.g. redis://localhost:6379/0")
        cluster = split_cluster_url(url.strip())
        if cluster is not None:
            url, seeds = cluster
            overrides = {"cluster_nodes": seeds, **overrides}
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"invalid Redis URL {_mask(url)!r}: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise ConfigError(
                f"invalid Redis URL {_mask(url)!r}: scheme {parts.scheme!r} is not one of "
                "redis://, rediss://, unix://, redis+cluster://, rediss+cluster://"
            )
        fields: dict[str, Any] = {"scheme": scheme}
        if parts.username:
            fields["username"] = unquote(parts.username)
        if parts.password:
            fields["password"] = unquote(parts.password)
        elif os.environ.get(ENV_PASSWORD):
            fields["password"] = os.environ[ENV_PASSWORD]
        query = dict(q.split("=", 1) for q in parts.query.split("&") if "=" in q)
        if scheme == "unix":
            fields["path"] = unquote(parts.path)
            db_text = query.get("db", "0")
        else:
            if not parts.hostname:
                raise ConfigError(f"invalid Redis URL {_mask(url)!r}: no host; e.g. redis://localhost:6379/0")
            fields["host"] = parts.hostname
            if port is not None:
                fields["port"] = port
            db_text = parts.path.lstrip("/") or query.get("db", "0")
        try:
            fields["db"] = int(db_text)
        except ValueError:
            raise ConfigError(
                f"invalid Redis URL {_mask(url)!r}: database {db_text!r} is not a number; use e.g. /0"
            ) from None
        for name, value in query.items():
            if name in URL_OPTIONS:
                fields[name] = _parse_option(url, name, unquote(value))
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def from_env(cls, **overrides: Any) -> RedisConfig:
        """Read ``RUSHPY_REDIS_URL``, then ``REDIS_URL``, else use ``redis://127.0.0.1:6379/0``."""
        return cls.from_url(configured_url() or DEFAULT_URL, **overrides)

    def to_url(self, *, include_password: bool = False, include_options: bool = False) -> str:
        """Return the URL of this configuration.

        Args:
            include_password: Put the password in the URL. Keep the default
                (``False``) for anything that may be printed or put on a command line.
            include_options: Add rushpy's own settings as query parameters
                (those of :data:`URL_OPTIONS` that differ from their defaults), for
                URLs that rushpy reads back (worker processes); plain Redis
                clients reject them.

        """
        auth = ""
        if self.username or (include_password and self.password):
            auth = quote(self.username or "", safe="")
            if include_password and self.password:
                auth += ":" + quote(self.password.get_secret_value(), safe="")
            auth += "@"
        # Only settings other than their defaults go in the URL, so the common URL stays short.
        query = []
        if include_options:
            for name in URL_OPTIONS:
                value = getattr(self, name)
                if value != type(self).model_fields[name].default:
                    query.append(f"{name}={quote(_format_option(value), safe='/')}")
        if self.scheme == "unix":
            return f"unix://{auth}{self.path}?" + "&".join([f"db={self.db}", *query])
        host = f"[{self.host}]" if ":" in self.host else self.host
        tail = "?" + "&".join(query) if query else ""
        url = f"{self.scheme}://{auth}{host}:{self.port}/{self.db}{tail}"
        return join_cluster_url(url, self.cluster_nodes) if self.cluster_nodes else url

    def __str__(self) -> str:
        return self.to_url()


MAX_HEARTBEAT_EXPIRE = 365 * 24 * 3600.0
"""Longest heartbeat expiry (seconds) a worker may ask for."""


def heartbeat_settings(period: float | None, expire: float | None) -> tuple[float, float] | None:
    """Validate heartbeat settings; ``None`` when the worker keeps no heartbeat.

    ``expire`` defaults to three periods. Both must be positive numbers and
    ``expire`` at least twice ``period``, so one late beat does not make a
    healthy worker look lost.

    Raises:
        ConfigError: a value is not a positive number, expire < 2 x period, or
            expire > :data:`MAX_HEARTBEAT_EXPIRE` (the server refuses such expiries,
            and a refusal at registration would leave a half-registered worker).

    """
    if period is None and expire is None:
        return None
    if period is None:
        raise ConfigError(f"heartbeat_expire={expire!r} needs heartbeat_period as well")
    for name, value in (("heartbeat_period", period), ("heartbeat_expire", expire)):
        if value is None:
            continue
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ConfigError(f"invalid {name}={value!r}: use a number of seconds > 0")
    expire = 3 * period if expire is None else expire
    if expire > MAX_HEARTBEAT_EXPIRE:
        raise ConfigError(
            f"invalid heartbeat_expire={expire!r} (from heartbeat_period={period!r}): at most "
            f"{MAX_HEARTBEAT_EXPIRE:g} s (a year); a worker that beats less often than that "
            "is better run without a heartbeat"
        )
    if expire < 2 * period:
        raise ConfigError(
            f"invalid heartbeat_expire={expire!r}: it must be at least twice "
            f"heartbeat_period={period!r}; use heartbeat_expire >= {2 * period!r}"
        )
    return float(period), float(expire)


def configured_url() -> str | None:
    """The URL named by ``RUSHPY_REDIS_URL`` or ``REDIS_URL``, or ``None`` if neither is set."""
    for name in (ENV_URL, ENV_URL_FALLBACK):
        value = os.environ.get(name)
        if value:
            return value
    return None


def _mask(url: str) -> str:
    """Hide the password part of a URL for error messages.

    Up to the *last* ``@``: a password may hold a raw ``@`` (which the parser
    accepts), and masking only to the first one would show the rest of it.
    Masking too much of a malformed URL is the safe way to be wrong.
    """
    return re.sub(r"(//[^:/@]*:).*@", r"\1***@", url, flags=re.DOTALL)


def _parse_option(url: str, name: str, text: str) -> Any:
    """Convert a URL query value to the type of field ``name`` (pydantic checks the range)."""
    annotation = str(RedisConfig.model_fields[name].annotation)
    if "float" in annotation:
        if text.lower() == "none" and "None" in annotation:
            return None
        try:
            return float(text)
        except ValueError:
            raise ConfigError(
                f"invalid Redis URL {_mask(url)!r}: {name}={text!r} is not a number of seconds; "
                f"use e.g. ?{name}=30"
            ) from None
    return text


def _format_option(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _explain(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        value = err.get("input")
        if isinstance(value, dict) and value.get("password") is not None:
            value = {**value, "password": "***"}
        shown = "***" if where == "password" else repr(value)
        problems.append(f"{where}={shown}: {err['msg']}")
    return "invalid Redis configuration: " + "; ".join(problems)
