"""WorkerSpec: validation, the worker command line and the stored start arguments (no server needed)."""

from __future__ import annotations

import argparse
import math
from typing import Any

import pytest

import rushpy
from rushpy.signing import SigningKey, StartArgsPolicy
from rushpy.spec import WorkerSpec

KEY = SigningKey(b"k" * 32)
TRUSTING = StartArgsPolicy(allow_modules=("a", "tests"))

FULL = WorkerSpec(
    network_id="net-1",
    prefix="app",
    fun="tests.funcs:square",
    concurrency=3,
    heartbeat_period=0.1,
    heartbeat_expire=0.7,
    idle_timeout=2.5,
    log_level="debug",
    worker_id="w-1",
    wait_for_start_args=math.inf,
)


@pytest.mark.parametrize(
    ("fields", "error", "named"),
    [
        ({"network_id": "a b"}, rushpy.ConfigError, "network id 'a b'"),
        ({"network_id": "n", "prefix": "a:b"}, rushpy.ConfigError, "key prefix 'a:b'"),
        ({"network_id": "n", "worker_id": "{w}"}, rushpy.ConfigError, "worker id '{w}'"),
        ({"network_id": "n", "fun": "tests.funcs"}, rushpy.WorkerFunctionError, "'tests.funcs'"),
        ({"network_id": "n", "concurrency": 0}, rushpy.ConfigError, "concurrency=0"),
        ({"network_id": "n", "concurrency": True}, rushpy.ConfigError, "concurrency=True"),
        ({"network_id": "n", "concurrency": "3"}, rushpy.ConfigError, "concurrency='3'"),
        ({"network_id": "n", "heartbeat_period": 1.0, "heartbeat_expire": 1.5}, rushpy.ConfigError, "1.5"),
        ({"network_id": "n", "heartbeat_expire": 3.0}, rushpy.ConfigError, "heartbeat_period"),
        ({"network_id": "n", "heartbeat_period": -1.0}, rushpy.ConfigError, "heartbeat_period=-1.0"),
        ({"network_id": "n", "idle_timeout": 0}, rushpy.ConfigError, "idle_timeout=0"),
        ({"network_id": "n", "log_level": "loud"}, rushpy.ConfigError, "log_level='loud'"),
        ({"network_id": "n", "wait_for_start_args": -1.0}, rushpy.ConfigError, "wait_for_start_args=-1.0"),
        ({"network_id": "n", "wait_for_start_args": math.nan}, rushpy.ConfigError, "wait_for_start_args=nan"),
        ({"network_id": "n", "url": "redis://x"}, rushpy.ConfigError, "url='redis://x'"),
    ],
)
def test_invalid_values_raise_rush_errors_naming_them(
    fields: dict[str, Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named.replace("{", r"\{").replace("(", r"\(")) as info:
        WorkerSpec(**fields)
    assert isinstance(info.value, rushpy.RushError)


def test_defaults_and_heartbeat_expire_defaulting_to_three_periods() -> None:
    spec = WorkerSpec(network_id="n")
    assert (spec.prefix, spec.fun, spec.concurrency, spec.log_level) == ("rush", None, 1, "warning")
    assert (spec.heartbeat_period, spec.heartbeat_expire, spec.idle_timeout, spec.worker_id) == (None,) * 4
    assert spec.wait_for_start_args == 0
    beat = WorkerSpec(network_id="n", heartbeat_period=2)
    assert (beat.heartbeat_period, beat.heartbeat_expire) == (2.0, 6.0)


def test_spec_is_frozen() -> None:
    with pytest.raises(Exception, match="frozen"):
        FULL.concurrency = 2  # type: ignore[misc]


# -- command line ----------------------------------------------------------------------------------
def test_argv_round_trips_every_field() -> None:
    argv = FULL.to_argv()
    assert argv[:2] == ["--network", "net-1"]
    assert "--wait-for-start-args" in argv and "inf" in argv
    back = WorkerSpec.from_argv(argv)
    assert back == FULL
    assert back.heartbeat_period == 0.1  # floats are written exactly (repr)


def test_argv_holds_only_the_fields_given() -> None:
    spec = WorkerSpec(network_id="n", concurrency=2)
    assert spec.to_argv() == ["--network", "n", "--concurrency", "2"]
    back = WorkerSpec.from_argv(spec.to_argv())
    assert back == spec
    assert back.model_fields_set == {"network_id", "concurrency"}


def test_namespace_of_the_cli_parser() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    WorkerSpec.add_arguments(parser)
    options = parser.parse_args(["--network", "n", "--url", "redis://h:1/0", "--idle-timeout", "4"])
    spec = WorkerSpec.from_namespace(options)
    assert spec == WorkerSpec(network_id="n", idle_timeout=4.0)
    assert spec.model_fields_set == {"network_id", "idle_timeout"}


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--fun", "a:b"], "--network"),
        (["--network", "n", "--concurrency", "many"], "many"),
        (["--network", "n", "--bogus", "1"], "--bogus"),
        (["--network", "n", "--log-level", "loud"], "loud"),
        (["--network", "n", "--concurrency", "0"], "concurrency=0"),
    ],
)
def test_from_argv_raises_config_error(argv: list[str], named: str) -> None:
    with pytest.raises(rushpy.ConfigError, match=named):
        WorkerSpec.from_argv(argv)


# -- stored start arguments ------------------------------------------------------------------------
def test_start_args_round_trip_without_the_process_identity() -> None:
    args = FULL.to_start_args()
    assert args == {
        "fun": "tests.funcs:square",
        "concurrency": 3,
        "heartbeat_period": 0.1,
        "heartbeat_expire": 0.7,
        "idle_timeout": 2.5,
        "log_level": "debug",
    }
    back = WorkerSpec.from_start_args(args, "net-1", prefix="app")
    assert back.to_start_args() == args
    assert back.worker_id is None and back.wait_for_start_args == 0


def test_from_start_args_ignores_unknown_and_missing_keys() -> None:
    # An older controller stored fewer keys; a newer one may store more.
    spec = WorkerSpec.from_start_args({"fun": "a:b", "concurrency": 2, "signature": b"x"}, "n")
    assert (spec.fun, spec.concurrency, spec.idle_timeout, spec.log_level) == ("a:b", 2, None, "warning")


def test_to_start_args_needs_a_function() -> None:
    with pytest.raises(rushpy.ConfigError, match="fun="):
        WorkerSpec(network_id="n").to_start_args()


def test_resolve_keeps_a_spec_with_a_function() -> None:
    spec = WorkerSpec(network_id="n", fun="a:b")
    # A function named by the operator needs no check, even under a policy that trusts nothing.
    assert spec.resolve({"fun": "c:d", "concurrency": 5}, StartArgsPolicy()) is spec
    assert spec.resolve(None, StartArgsPolicy()) is spec


@pytest.mark.parametrize("stored", [None, {}])
def test_resolve_without_function_and_start_args_names_the_network_and_the_fixes(
    stored: dict[str, Any] | None,
) -> None:
    with pytest.raises(rushpy.NoStartArgumentsError, match=r"'n'.*--fun.*--wait-for-start-args"):
        WorkerSpec(network_id="n").resolve(stored, TRUSTING)


def test_resolve_takes_stored_values_and_lets_given_flags_win() -> None:
    stored = FULL.to_start_args()
    spec = WorkerSpec(network_id="n", worker_id="w", concurrency=7).resolve(stored, TRUSTING)
    assert spec.fun == "tests.funcs:square"
    assert spec.concurrency == 7  # given
    assert (spec.idle_timeout, spec.log_level) == (2.5, "debug")  # stored
    assert (spec.heartbeat_period, spec.heartbeat_expire) == (0.1, 0.7)
    assert (spec.network_id, spec.worker_id) == ("n", "w")


def test_resolve_treats_the_heartbeat_pair_as_one_setting() -> None:
    stored = {"fun": "a:b", "heartbeat_period": 1.0, "heartbeat_expire": 30.0}
    spec = WorkerSpec(network_id="n", heartbeat_period=2.0).resolve(stored, TRUSTING)
    # Not period 2 with the stored expiry 30: the given period brings its default expiry.
    assert (spec.heartbeat_period, spec.heartbeat_expire) == (2.0, 6.0)


# -- stored start arguments are checked (issue 8, point 9) -----------------------------------------
def test_resolve_refuses_stored_start_arguments_the_policy_does_not_accept() -> None:
    stored = {"fun": "os:system", "concurrency": 1}
    with pytest.raises(rushpy.UntrustedCodeError, match=r"'n'.*os:system.*not signed.*--fun os:system"):
        WorkerSpec(network_id="n").resolve(stored, StartArgsPolicy(KEY, ("tests",)))


def test_resolve_runs_start_arguments_signed_for_its_network() -> None:
    stored = FULL.model_copy(update={"network_id": "n", "prefix": "rush"}).signed_start_args(KEY)
    assert stored["signature"]["key_id"] == KEY.key_id
    spec = WorkerSpec(network_id="n").resolve(stored, StartArgsPolicy(KEY))
    assert (spec.fun, spec.concurrency) == ("tests.funcs:square", 3)
    # The same arguments read under another prefix are another network's: refused.
    with pytest.raises(rushpy.UntrustedCodeError, match="does not match"):
        WorkerSpec(network_id="n", prefix="other").resolve(stored, StartArgsPolicy(KEY))


def test_resolve_refuses_signed_start_arguments_without_a_function() -> None:
    # Signed, but nothing to run (a newer controller's worker loop, say): a clear error, not a crash.
    from rushpy.signing import sign_start_args

    stored = sign_start_args({"concurrency": 2}, "n", key=KEY)
    with pytest.raises(rushpy.NoStartArgumentsError, match="name no function"):
        WorkerSpec(network_id="n").resolve(stored, StartArgsPolicy(KEY))


# -- worker loops (issue 9) ------------------------------------------------------------------------
LOOP = WorkerSpec(
    network_id="n", worker_loop="tests.loop_funcs:square_loop", loop_args={"n": 3, "space": {"x": [0, 1.5]}}
)


def test_loop_argv_round_trips_with_json_loop_args() -> None:
    argv = LOOP.to_argv()
    assert argv == [
        "--network",
        "n",
        "--worker-loop",
        "tests.loop_funcs:square_loop",
        "--loop-arg",
        "n=3",
        "--loop-arg",
        'space={"x":[0,1.5]}',
    ]
    assert WorkerSpec.from_argv(argv) == LOOP


def test_loop_start_args_round_trip_and_a_function_s_stay_as_before() -> None:
    args = LOOP.to_start_args()
    assert (args["worker_loop"], args["loop_args"], args["fun"]) == (LOOP.worker_loop, LOOP.loop_args, None)
    assert WorkerSpec.from_start_args(args, "n") == LOOP
    assert "worker_loop" not in FULL.to_start_args()  # older workers see what they know


def test_resolve_runs_a_stored_loop_and_given_loop_args_override_the_stored_ones() -> None:
    stored = LOOP.signed_start_args(KEY)
    spec = WorkerSpec(network_id="n").resolve(stored, StartArgsPolicy(KEY))
    assert (spec.worker_loop, spec.loop_args) == (LOOP.worker_loop, LOOP.loop_args)
    flags = WorkerSpec.from_argv(["--network", "n", "--loop-arg", "n=7"])
    given = flags.resolve(stored, StartArgsPolicy(KEY))
    assert given.loop_args == {"n": 7}


def test_resolve_uses_nothing_stored_when_a_loop_is_given() -> None:
    spec = WorkerSpec(network_id="n", worker_loop="a:b")
    assert spec.resolve(LOOP.to_start_args(), StartArgsPolicy()) is spec


def test_resolve_checks_a_stored_loop_like_a_stored_function() -> None:
    with pytest.raises(rushpy.UntrustedCodeError, match=r"worker_loop='tests.loop_funcs:square_loop'"):
        WorkerSpec(network_id="n").resolve(LOOP.to_start_args(), StartArgsPolicy(KEY))
    # Loop arguments are signed with the rest: changing them breaks the signature.
    tampered = {**LOOP.signed_start_args(KEY), "loop_args": {"n": 10**6}}
    with pytest.raises(rushpy.UntrustedCodeError, match="does not match"):
        WorkerSpec(network_id="n").resolve(tampered, StartArgsPolicy(KEY))


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"fun": "a:b", "worker_loop": "c:d"}, "both fun='a:b' and worker_loop='c:d'"),
        ({"fun": "a:b", "loop_args": {"n": 1}}, r"loop arguments \['n'\] given with fun='a:b'"),
        ({"worker_loop": "c:d", "concurrency": 2}, "concurrency=2 with worker_loop"),
        ({"worker_loop": "c:d", "idle_timeout": 3.0}, "idle_timeout=3.0 with worker_loop"),
        ({"worker_loop": "c:d", "loop_args": {"worker": 1}}, "loop argument name 'worker'"),
        ({"worker_loop": "c:d", "loop_args": {"a-b": 1}}, "loop argument name 'a-b'"),
        ({"worker_loop": "c:d", "loop_args": {"n": b"x"}}, r"loop argument n=b'x' \(bytes\)"),
        ({"worker_loop": "c:d", "loop_args": {"n": 2**64}}, "fit in 64 bits"),
        ({"worker_loop": "c:d", "loop_args": {"n": {1: 2}}}, "key 1 is not a string"),
        ({"worker_loop": "c:d", "loop_args": {"n": [{"a": {1}}]}}, r"n\[0\]\['a'\]=\{1\}"),
        ({"worker_loop": "nocolon"}, "'nocolon'"),
    ],
)
def test_invalid_loop_settings_raise_naming_them(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(rushpy.RushError, match=named):
        WorkerSpec(network_id="n", **fields)


def test_loop_args_become_plain_data() -> None:
    spec = WorkerSpec(network_id="n", worker_loop="c:d", loop_args={"t": (1, (2, 3)), "none": None})
    assert spec.loop_args == {"t": [1, [2, 3]], "none": None}


@pytest.mark.parametrize(
    ("item", "named"),
    [("n", "use NAME=JSON"), ("=1", "use NAME=JSON"), ("name=abc", r"not JSON.*name='\"abc\"'")],
)
def test_bad_loop_arg_flags_raise_config_errors(item: str, named: str) -> None:
    with pytest.raises(rushpy.ConfigError, match=named):
        WorkerSpec.from_argv(["--network", "n", "--worker-loop", "c:d", "--loop-arg", item])


def test_to_start_args_message_names_both_ways() -> None:
    with pytest.raises(rushpy.ConfigError, match="pass fun= or worker_loop="):
        WorkerSpec(network_id="n").to_start_args()
