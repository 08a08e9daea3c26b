"""RedisConfig: arguments, URLs, environment, secrecy, validation; validate_identifier."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from rushpy import ConfigError, Controller, RedisConfig, Worker
from rushpy.config import (
    DEFAULT_URL,
    ENV_PASSWORD,
    ENV_URL,
    ENV_URL_FALLBACK,
    heartbeat_settings,
    validate_identifier,
)

SECRET = "hunter2-Sup3rSecret"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every test starts from an environment without rushpy/redis settings.
    for name in (ENV_URL, ENV_URL_FALLBACK, ENV_PASSWORD):
        monkeypatch.delenv(name, raising=False)


# -- from arguments ---------------------------------------------------------------------


def test_defaults() -> None:
    config = RedisConfig()
    assert config.scheme == "redis"
    assert config.host == "127.0.0.1"
    assert config.port == 6379
    assert config.db == 0
    assert config.path is None
    assert config.username is None
    assert config.password is None
    assert config.to_url() == "redis://127.0.0.1:6379/0"


def test_from_arguments() -> None:
    config = RedisConfig(host="redis.example", port=6390, db=3, username="alice", password=SECRET)
    assert (config.host, config.port, config.db, config.username) == ("redis.example", 6390, 3, "alice")
    assert config.password is not None
    assert config.password.get_secret_value() == SECRET
    assert config.to_url() == "redis://alice@redis.example:6390/3"


def test_unix_from_arguments() -> None:
    config = RedisConfig(scheme="unix", path="/tmp/r.sock", db=2)
    assert config.to_url() == "unix:///tmp/r.sock?db=2"


def test_frozen() -> None:
    config = RedisConfig(port=7000)
    with pytest.raises(ValidationError, match="frozen"):
        config.port = 7001  # type: ignore[misc]
    assert config.port == 7000


def test_equal_configs_compare_equal() -> None:
    assert RedisConfig.from_url("redis://h:7000/1") == RedisConfig(host="h", port=7000, db=1)
    assert RedisConfig.from_url("redis://h:7000/1") != RedisConfig(host="h", port=7000, db=2)


# -- from_url -----------------------------------------------------------------------------


def test_from_url_redis_full() -> None:
    config = RedisConfig.from_url(f"redis://bob:{SECRET}@db.example:6380/5")
    assert config.scheme == "redis"
    assert config.host == "db.example"
    assert config.port == 6380
    assert config.db == 5
    assert config.username == "bob"
    assert config.password is not None
    assert config.password.get_secret_value() == SECRET


def test_from_url_defaults_port_and_db() -> None:
    config = RedisConfig.from_url("redis://db.example")
    assert (config.host, config.port, config.db) == ("db.example", 6379, 0)


def test_from_url_db_from_query() -> None:
    assert RedisConfig.from_url("redis://db.example?db=7").db == 7


def test_from_url_password_only() -> None:
    config = RedisConfig.from_url(f"redis://:{SECRET}@h:1234/0")
    assert config.username is None
    assert config.password is not None
    assert config.password.get_secret_value() == SECRET


def test_from_url_percent_encoded_credentials() -> None:
    config = RedisConfig.from_url("redis://us%3Aer:p%40ss%2Fw@h:1234/0")
    assert config.username == "us:er"
    assert config.password is not None
    assert config.password.get_secret_value() == "p@ss/w"
    # ...and to_url quotes them again, so the URL parses back to the same config.
    assert RedisConfig.from_url(config.to_url(include_password=True)) == config


def test_from_url_rediss() -> None:
    config = RedisConfig.from_url("rediss://user:pw@secure.example:6390/3")
    assert config.scheme == "rediss"
    assert (config.host, config.port, config.db, config.username) == ("secure.example", 6390, 3, "user")
    assert config.to_url() == "rediss://user@secure.example:6390/3"


def test_from_url_scheme_is_case_insensitive() -> None:
    assert RedisConfig.from_url("REDIS://h:1/0").scheme == "redis"


def test_from_url_ipv6_host() -> None:
    config = RedisConfig.from_url("redis://[::1]:6380/2")
    assert config.host == "::1"
    assert config.port == 6380
    assert config.db == 2
    assert config.to_url() == "redis://[::1]:6380/2"
    assert RedisConfig.from_url(config.to_url()) == config


def test_from_url_unix() -> None:
    config = RedisConfig.from_url("unix:///var/run/redis/redis.sock?db=4")
    assert config.scheme == "unix"
    assert config.path == "/var/run/redis/redis.sock"
    assert config.db == 4
    assert config.to_url() == "unix:///var/run/redis/redis.sock?db=4"


def test_from_url_unix_default_db_and_credentials() -> None:
    config = RedisConfig.from_url(f"unix://carol:{SECRET}@/tmp/r.sock")
    assert config.path == "/tmp/r.sock"
    assert config.db == 0
    assert config.username == "carol"
    assert config.password is not None
    assert config.password.get_secret_value() == SECRET


def test_from_url_overrides() -> None:
    config = RedisConfig.from_url("redis://h:1234/0", db=9, socket_timeout=2.5)
    assert config.db == 9
    assert config.socket_timeout == 2.5


@pytest.mark.parametrize(
    "url",
    [
        "redis://h:1234/3",
        "rediss://u@h:1234/3",
        "unix:///tmp/x.sock?db=2",
        "redis://[fe80::1]:6379/0",
    ],
)
def test_to_url_round_trip(url: str) -> None:
    config = RedisConfig.from_url(url)
    assert config.to_url(include_options=True) == url
    assert RedisConfig.from_url(config.to_url(include_options=True)) == config
    assert "reconnect_budget" not in config.to_url()  # plain Redis clients reject it


# -- from_env -----------------------------------------------------------------------------


def test_from_env_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RedisConfig.from_env() == RedisConfig.from_url(DEFAULT_URL)


def test_from_env_fallback_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_URL_FALLBACK, "redis://fallback.example:7001/1")
    config = RedisConfig.from_env()
    assert (config.host, config.port, config.db) == ("fallback.example", 7001, 1)


def test_from_env_rushpy_variable_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_URL_FALLBACK, "redis://fallback.example:7001/1")
    monkeypatch.setenv(ENV_URL, "redis://primary.example:7002/2")
    config = RedisConfig.from_env()
    assert (config.host, config.port, config.db) == ("primary.example", 7002, 2)


def test_from_env_empty_variable_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_URL, "")
    monkeypatch.setenv(ENV_URL_FALLBACK, "redis://fallback.example:7001/1")
    assert RedisConfig.from_env().host == "fallback.example"


def test_from_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_URL, "redis://primary.example:7002/2")
    assert RedisConfig.from_env(db=5).db == 5


def test_from_env_invalid_url_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_URL, "http://nope.example")
    with pytest.raises(ConfigError, match="'http'"):
        RedisConfig.from_env()


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_PASSWORD, SECRET)
    config = RedisConfig.from_url("redis://h:1234/0")
    assert config.password is not None
    assert config.password.get_secret_value() == SECRET
    monkeypatch.setenv(ENV_URL, "redis://u@h:1234/0")
    from_env = RedisConfig.from_env()
    assert from_env.password is not None
    assert from_env.password.get_secret_value() == SECRET


def test_password_in_url_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_PASSWORD, "from-env")
    config = RedisConfig.from_url("redis://:from-url@h:1234/0")
    assert config.password is not None
    assert config.password.get_secret_value() == "from-url"


def test_no_password_without_environment() -> None:
    assert RedisConfig.from_url("redis://h:1234/0").password is None


# -- secrecy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [f"redis://u:{SECRET}@h:1234/0", f"rediss://:{SECRET}@h:1234/0", f"unix://u:{SECRET}@/tmp/r.sock"],
)
def test_password_never_printed(url: str) -> None:
    config = RedisConfig.from_url(url)
    for text in (repr(config), str(config), config.to_url(), f"{config}", str(config.model_dump())):
        assert SECRET not in text
    assert SECRET in config.to_url(include_password=True)
    assert RedisConfig.from_url(config.to_url(include_password=True)) == config


def test_password_from_environment_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_PASSWORD, SECRET)
    config = RedisConfig.from_url("redis://h:1234/0")
    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    assert config.to_url() == "redis://h:1234/0"
    assert config.to_url(include_password=True) == f"redis://:{SECRET}@h:1234/0"


def test_password_masked_in_url_errors() -> None:
    with pytest.raises(ConfigError) as info:
        RedisConfig.from_url(f"redis://u:{SECRET}@h:notaport/0")
    assert SECRET not in str(info.value)
    assert "notaport" in str(info.value)
    with pytest.raises(ConfigError) as info:
        RedisConfig.from_url(f"http://u:{SECRET}@h/0")
    assert SECRET not in str(info.value)


def test_password_masked_in_field_errors() -> None:
    with pytest.raises(ConfigError) as info:
        RedisConfig(password=SECRET, port=0)
    assert SECRET not in str(info.value)
    assert "port=0" in str(info.value)


def test_password_masked_when_unix_path_missing() -> None:
    # The "unix needs a path" check runs on the whole model; its error must not
    # echo the password either.
    with pytest.raises(ConfigError) as info:
        RedisConfig(scheme="unix", password=SECRET)
    assert "unix" in str(info.value)
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError) as info:
        RedisConfig.from_url(f"unix://:{SECRET}@?db=1")
    assert SECRET not in str(info.value)


# -- invalid input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://h:6379/0", "'http'"),
        ("memcached://h", "'memcached'"),
        ("h:6379", "'h'"),
        ("redis://h:99999/0", "99999"),
        ("redis://h:0/0", "port=0"),
        ("redis://h:port/0", "'port'"),
        ("redis://h/zero", "'zero'"),
        ("redis://h/-1", "db=-1"),
        ("unix:///tmp/r.sock?db=x", "'x'"),
        ("unix://", "unix"),
        ("unix://?db=1", "unix"),
        ("redis:///0", "no host"),
    ],
)
def test_invalid_urls(url: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        RedisConfig.from_url(url)
    assert named in str(info.value)


@pytest.mark.parametrize("url", ["", "   "])
def test_empty_url(url: str) -> None:
    with pytest.raises(ConfigError, match="invalid Redis URL"):
        RedisConfig.from_url(url)


def test_non_string_url() -> None:
    with pytest.raises(ConfigError, match="None"):
        RedisConfig.from_url(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"port": "abc"}, "port='abc'"),
        ({"port": 70000}, "port=70000"),
        ({"port": -1}, "port=-1"),
        ({"db": "first"}, "db='first'"),
        ({"db": -2}, "db=-2"),
        ({"host": 12}, "host=12"),
        ({"scheme": "http"}, "scheme='http'"),
        ({"socket_timeout": 0}, "socket_timeout=0"),
        ({"connect_timeout": -1.0}, "connect_timeout=-1.0"),
        ({"ssl_cert_reqs": "maybe"}, "ssl_cert_reqs='maybe'"),
        ({"colour": "blue"}, "colour='blue'"),
        ({"scheme": "unix"}, "unix"),
    ],
)
def test_invalid_fields(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        RedisConfig(**fields)
    assert named in str(info.value)


def test_config_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="port"):
        RedisConfig(port="x")


# -- validate_identifier ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["net", "a", "Net-1.2_x", "0abc", "x" * 128])
def test_valid_identifiers(value: str) -> None:
    assert validate_identifier(value, "network id") == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a{b",
        "{net}",
        "a}b",
        "a:b",
        "a b",
        " net",
        "net ",
        "a\tb",
        "net\n",
        "-net",
        ".net",
        "_net",
        "x" * 129,
        "né",
        "a*b",
        "a/b",
    ],
)
def test_invalid_identifiers(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_identifier(value, "network id")
    assert "network id" in str(info.value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", [None, 5, b"net", ["net"]])
def test_non_string_identifiers(value: object) -> None:
    with pytest.raises(ConfigError, match="worker id"):
        validate_identifier(value, "worker id")


def test_reconnect_budget_default_and_validation() -> None:
    from rushpy.config import DEFAULT_RECONNECT_BUDGET

    assert RedisConfig().reconnect_budget == DEFAULT_RECONNECT_BUDGET == 10.0
    assert RedisConfig(reconnect_budget=0).reconnect_budget == 0.0
    assert RedisConfig.from_url("redis://h:1/0", reconnect_budget=2.5).reconnect_budget == 2.5
    for bad in (-1, float("inf"), float("nan"), "soon"):
        with pytest.raises(ConfigError, match="reconnect_budget"):
            RedisConfig(reconnect_budget=bad)


@pytest.mark.parametrize(
    "url",
    ["redis://h:6379/2?reconnect_budget=2.5", "unix:///tmp/r.sock?db=3&reconnect_budget=0"],
)
def test_reconnect_budget_round_trips_through_the_url(url: str) -> None:
    config = RedisConfig.from_url(url)
    assert config.reconnect_budget in (2.5, 0.0)
    assert config.to_url(include_options=True) == url
    assert RedisConfig.from_url(config.to_url(include_options=True)) == config
    assert "reconnect_budget" not in config.to_url()  # plain Redis clients reject it


def test_default_reconnect_budget_stays_out_of_the_url() -> None:
    assert RedisConfig.from_url("redis://h:6379/0").to_url(include_options=True) == "redis://h:6379/0"


@pytest.mark.parametrize("value", ["soon", "-1", "inf"])
def test_invalid_reconnect_budget_in_a_url_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="reconnect_budget"):
        RedisConfig.from_url(f"redis://h:6379/0?reconnect_budget={value}")


@pytest.mark.parametrize(("period", "expire"), [(1e17, None), (1.0, 1e9), (2e7, None)])
def test_heartbeat_expiry_beyond_a_year_is_refused(period: float, expire: float | None) -> None:
    with pytest.raises(ConfigError, match="at most"):
        heartbeat_settings(period, expire)


async def test_a_refused_heartbeat_leaves_no_half_registered_worker(
    config: RedisConfig, network_id: str
) -> None:
    """The server would refuse a huge expiry inside the registration transaction (no rollback)."""
    with pytest.raises(ConfigError):
        Worker(network_id, config=config, heartbeat_period=1e17)
    async with Controller(network_id, config=config) as rush:
        assert await rush.n_workers() == 0


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("redis://u:p@ss@host:xx/0", "ss@"),
        ("redis://:se@cr@et@", "cr@et"),
        ("rediz://u:a@b@c@h/0", "b@c"),
        ("redis://u:p@ss@host:6379/zz", "ss@"),
    ],
)
def test_a_password_with_at_signs_is_masked_whole(url: str, secret: str) -> None:
    with pytest.raises(ConfigError) as info:
        RedisConfig.from_url(url)
    assert secret not in str(info.value)
    assert "***" in str(info.value)
