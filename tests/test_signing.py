"""Workers run only code their operator allowed (issue 8, point 9).

The attack: whoever can write a network's keys stores ``{"fun": "os:system"}``
as its start arguments and pushes ``{"command": "..."}``; a worker started
without ``--fun`` would run the command. Real CLI worker processes and a real
controller against the suite's server; a marker file shows whether the
command ran.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

import rushpy
from rushpy import Controller, RedisConfig
from rushpy.signing import (
    ENV_ALLOW_MODULES,
    ENV_SIGNING_KEY,
    ENV_SIGNING_KEY_FILE,
    SigningKey,
    StartArgsPolicy,
    configured_key,
    parse_allow_modules,
    sign_start_args,
    signing_key,
)
from rushpy.store import Store
from tests import funcs
from tests.test_worker_cli import REPO, worker_env

pytestmark = pytest.mark.usefixtures("anyio_backend")

KEY = SigningKey(b"k" * 32)
OTHER = SigningKey(b"o" * 32)
ARGS: dict[str, Any] = {"fun": "tests.funcs:square", "concurrency": 2, "log_level": "warning"}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A key or allow-list in the developer's shell must not decide these tests.
    for name in (ENV_SIGNING_KEY, ENV_SIGNING_KEY_FILE, ENV_ALLOW_MODULES):
        monkeypatch.delenv(name, raising=False)


# -- signatures (no server) --------------------------------------------------------------------
def test_signed_arguments_verify_whatever_the_order_of_their_fields() -> None:
    signed = sign_start_args(ARGS, "net", key=KEY)
    reordered = dict(reversed(list(signed.items())))
    assert StartArgsPolicy(KEY).check(reordered, "net") == f"signed with key {KEY.key_id}"
    # Signing again replaces the old signature instead of signing it.
    assert sign_start_args(signed, "net", key=KEY) == signed


async def test_a_signature_survives_the_round_trip_through_redis(store: Store, network_id: str) -> None:
    # msgpack turns tuples into lists and keeps ints and floats apart: the signature must hold.
    args = {**ARGS, "heartbeat_period": 1.0, "loop_args": {"bounds": (0, 1.5), "names": ["a", "b"]}}
    await store.workers.set_start_args(sign_start_args(args, network_id, key=KEY))
    stored = await store.workers.get_start_args()
    assert stored is not None and stored["loop_args"]["bounds"] == [0, 1.5]
    assert StartArgsPolicy(KEY).check(stored, network_id).startswith("signed")
    # 1 is not 1.0: a type changed after signing is a change.
    with pytest.raises(rushpy.UntrustedCodeError, match="does not match"):
        StartArgsPolicy(KEY).check({**stored, "heartbeat_period": 1}, network_id)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda a: {**a, "fun": "os:system"}, "does not match"),
        (lambda a: {**a, "concurrency": 3}, "does not match"),
        (lambda a: {**a, "worker_loop_args": {"n": 1}}, "does not match"),  # fields added later too
        (lambda a: {k: v for k, v in a.items() if k != "log_level"}, "does not match"),
        (lambda a: {k: v for k, v in a.items() if k != "signature"}, "not signed"),
        (lambda a: {**a, "signature": "forged"}, "not one this version can check"),
        (lambda a: {**a, "signature": {**a["signature"], "mac": 5}}, "does not match"),
    ],
)
def test_changed_arguments_are_refused(change: Any, problem: str) -> None:
    tampered = change(sign_start_args(ARGS, "net", key=KEY))
    with pytest.raises(rushpy.UntrustedCodeError, match=problem):
        StartArgsPolicy(KEY).check(tampered, "net")


def test_arguments_signed_for_another_network_or_prefix_are_refused() -> None:
    signed = sign_start_args(ARGS, "net-a", key=KEY)
    with pytest.raises(rushpy.UntrustedCodeError, match="copied from another network"):
        StartArgsPolicy(KEY).check(signed, "net-b")
    with pytest.raises(rushpy.UntrustedCodeError, match="does not match"):
        StartArgsPolicy(KEY).check(signed, "net-a", prefix="other")


def test_arguments_signed_with_another_key_are_refused_naming_both_keys() -> None:
    signed = sign_start_args(ARGS, "net", key=OTHER)
    with pytest.raises(rushpy.UntrustedCodeError, match=f"another key.*{OTHER.key_id}.*{KEY.key_id}"):
        StartArgsPolicy(KEY).check(signed, "net")
    with pytest.raises(rushpy.UntrustedCodeError, match=f"{ENV_SIGNING_KEY} is not set here"):
        StartArgsPolicy(None).check(signed, "net")


def test_arguments_signed_with_another_processes_private_key_say_so() -> None:
    # A controller without RUSHPY_SIGNING_KEY signs with a key of its own process.
    signed = sign_start_args(ARGS, "net", key=SigningKey(b"p" * 32, shared=False))
    for policy in (StartArgsPolicy(KEY), StartArgsPolicy(None)):
        with pytest.raises(rushpy.UntrustedCodeError, match="private per-process key"):
            policy.check(signed, "net")


def test_a_value_that_cannot_be_signed_is_a_config_error() -> None:
    with pytest.raises(rushpy.ConfigError, match="not a string"):
        sign_start_args({**ARGS, "loop_args": {1: "x"}}, "net", key=KEY)
    with pytest.raises(rushpy.ConfigError, match="cannot be signed"):
        sign_start_args({**ARGS, "x": object()}, "net", key=KEY)
    # Stored (hence unsignable) values of that kind are refused, not raised as ConfigError elsewhere.
    signed = sign_start_args(ARGS, "net", key=KEY)
    with pytest.raises(rushpy.UntrustedCodeError, match="cannot be verified"):
        StartArgsPolicy(KEY).check({**signed, "x": object()}, "net")


# -- allow-lists (no server) --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fun", "allowed"),
    [
        ("tests.funcs:square", True),
        ("tests:square", True),
        ("testsuite.funcs:square", False),  # a prefix is a module, not a string prefix
        ("os:system", False),
        ("tests/funcs.py:square", False),  # files are admitted only by a signature
        (5, False),
    ],
)
def test_allow_list_admits_modules_under_its_prefixes(fun: Any, allowed: bool) -> None:
    policy = StartArgsPolicy(None, ("tests", "mypkg.objectives"))
    assert policy.allows_module(fun) is allowed
    if allowed:
        assert policy.check({"fun": fun}, "net") == "allowed module"
    else:
        with pytest.raises(rushpy.UntrustedCodeError, match=r"not signed"):
            policy.check({"fun": fun}, "net")


def test_allow_list_must_admit_every_function_the_arguments_name() -> None:
    policy = StartArgsPolicy(None, ("tests",))
    with pytest.raises(rushpy.UntrustedCodeError, match="worker_loop='os:system'"):
        policy.check({"fun": "tests.funcs:square", "worker_loop": "os:system"}, "net")
    with pytest.raises(rushpy.UntrustedCodeError, match="no function"):
        policy.check({"concurrency": 2}, "net")


def test_refusal_says_what_each_operator_can_set() -> None:
    with pytest.raises(rushpy.UntrustedCodeError) as worker:
        StartArgsPolicy().check({"fun": "os:system"}, "net")
    for text in ("--fun os:system", "--allow-module os", ENV_ALLOW_MODULES, ENV_SIGNING_KEY, "'net'"):
        assert text in str(worker.value)
    with pytest.raises(rushpy.UntrustedCodeError) as controller:
        StartArgsPolicy().check({"fun": "os:system"}, "net", where="controller")
    assert "fun= to start_local_workers()" in str(controller.value)
    assert "--allow-module" not in str(controller.value)
    # A file cannot be allowed by a module prefix: that way is not suggested.
    with pytest.raises(rushpy.UntrustedCodeError) as file:
        StartArgsPolicy().check({"fun": "dir/job.py:run"}, "net")
    assert "--allow-module" not in str(file.value) and "--fun dir/job.py:run" in str(file.value)


@pytest.mark.parametrize("prefix", ["", "os.", "a b", "../x", "x:y", "1abc"])
def test_invalid_allowed_prefixes_are_config_errors(prefix: str) -> None:
    with pytest.raises(rushpy.ConfigError, match="allowed module prefix"):
        parse_allow_modules([prefix])


def test_policy_from_env_reads_the_allow_list_and_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_ALLOW_MODULES, " mypkg , tests.funcs,")
    monkeypatch.setenv(ENV_SIGNING_KEY, "s" * 20)
    policy = StartArgsPolicy.from_env(["extra", "mypkg"])
    assert policy.allow_modules == ("extra", "mypkg", "tests.funcs")
    assert policy.key == SigningKey(b"s" * 20)
    monkeypatch.delenv(ENV_SIGNING_KEY)
    assert StartArgsPolicy.from_env().key is None
    # A controller checking what it stored itself falls back to its own process key.
    assert StartArgsPolicy.from_env(process_key=True).key == signing_key()
    assert signing_key().shared is False


# -- the key ------------------------------------------------------------------------------------
def test_key_from_a_file_without_its_line_break(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"0123456789abcdef0123\n")
    monkeypatch.setenv(ENV_SIGNING_KEY_FILE, str(path))
    assert configured_key() == SigningKey(b"0123456789abcdef0123")
    assert signing_key().shared is True
    assert "0123" not in repr(configured_key())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({ENV_SIGNING_KEY: "short"}, "5 bytes: use at least 16"),
        ({ENV_SIGNING_KEY: "x" * 20, ENV_SIGNING_KEY_FILE: "/k"}, "set only one"),
        ({ENV_SIGNING_KEY_FILE: "/no/such/key"}, "cannot read the signing key file.*'/no/such/key'"),
    ],
)
def test_bad_key_settings_are_config_errors(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(rushpy.ConfigError, match=message):
        configured_key()


# -- a real CLI worker ------------------------------------------------------------------------------
def run_worker(config: RedisConfig, args: list[str], env: dict[str, str] | None = None) -> Any:
    full = worker_env(config.to_url(include_password=True))
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "rushpy.worker", *args],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def push_command(controller: Controller, marker: Path) -> None:
    """Queue a task that creates ``marker`` if ``os:system`` runs it."""
    await controller.push_tasks([{"command": f"touch {marker}"}])


async def test_the_os_system_attack_is_refused(
    controller: Controller, store: Store, config: RedisConfig, network_id: str, tmp_path: Path
) -> None:
    marker = tmp_path / "owned"
    await store.workers.set_start_args({"fun": "os:system"})
    await push_command(controller, marker)
    done = await anyio.to_thread.run_sync(
        lambda: run_worker(config, ["--network", network_id, "--worker-id", "victim"])
    )
    assert done.returncode == 2, done.stderr
    assert "refusing the start arguments" in done.stderr and "os:system" in done.stderr
    assert "Traceback" not in done.stderr
    assert not marker.exists()
    assert await controller.n_queued_tasks() == 1  # nothing was popped
    assert "victim" not in await controller._store.workers.worker_ids()

    # Control: the operator's own allow-list does run it, so the refusal above is what stopped it.
    done = await anyio.to_thread.run_sync(
        lambda: run_worker(config, ["--network", network_id, "--allow-module", "os", "--idle-timeout", "0.3"])
    )
    assert done.returncode == 0, done.stderr
    assert marker.exists()


@pytest.mark.parametrize("how", ["tampered", "other key", "other network"])
async def test_cli_worker_refuses_signed_arguments_that_do_not_verify(
    controller: Controller, store: Store, config: RedisConfig, tmp_path: Path, how: str
) -> None:
    network_id = controller.network_id
    marker = tmp_path / "owned"
    attack = {"fun": "os:system", "concurrency": 1}
    if how == "tampered":
        stored = {**sign_start_args(ARGS, network_id, key=KEY), "fun": "os:system"}
    elif how == "other key":
        stored = sign_start_args(attack, network_id, key=OTHER)
    else:  # signed with the right key, for a network the attacker controls
        stored = sign_start_args(attack, "attacker-net", key=KEY)
    await store.workers.set_start_args(stored)
    await push_command(controller, marker)
    done = await anyio.to_thread.run_sync(
        lambda: run_worker(config, ["--network", network_id], {ENV_SIGNING_KEY: KEY.secret.decode()})
    )
    assert done.returncode == 2, done.stderr
    assert "refusing the start arguments" in done.stderr and "Traceback" not in done.stderr
    assert not marker.exists()


async def test_cli_worker_runs_arguments_signed_by_the_controller(
    controller: Controller, config: RedisConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    network_id = controller.network_id
    # The controller reads the key from the environment, the worker from a file.
    monkeypatch.setenv(ENV_SIGNING_KEY, KEY.secret.decode())
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY.secret + b"\n")
    key_file.chmod(0o600)
    keys = await controller.push_tasks([{"x": 4}])
    [local] = await controller.start_local_workers(1, fun=funcs.square, idle_timeout=0.3)
    await controller.wait_for_tasks(keys, timeout=30)
    await anyio.to_thread.run_sync(controller.local_workers[local].process.wait, 30)
    more = await controller.push_tasks([{"x": 5}])
    env = {ENV_SIGNING_KEY_FILE: str(key_file), ENV_SIGNING_KEY: ""}
    done = await anyio.to_thread.run_sync(
        lambda: run_worker(config, ["--network", network_id, "--worker-id", "signed"], env)
    )
    assert done.returncode == 0, done.stderr
    table = await controller.wait_for_tasks(more, timeout=5)
    assert (table[0]["y"], table[0]["worker_id"]) == (25, "signed")


def test_cli_rejects_a_bad_allowed_prefix_before_connecting(network_id: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rushpy.worker", "--network", network_id, "--allow-module", "a b"],
        cwd=REPO,
        env=worker_env("redis://127.0.0.1:1/0"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and "allowed module prefix 'a b'" in done.stderr, done.stderr


# -- the controller ------------------------------------------------------------------------------
async def test_controller_refuses_unsigned_stored_arguments(
    controller: Controller, store: Store, network_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.workers.set_start_args({"fun": "os:system"})
    with pytest.raises(rushpy.UntrustedCodeError, match=r"os:system.*not signed.*fun= to start_local"):
        await controller.start_local_workers(1)
    # Arguments another controller process signed with its private key are refused too.
    await store.workers.set_start_args(sign_start_args(ARGS, network_id, key=SigningKey(b"p" * 32, False)))
    with pytest.raises(rushpy.UntrustedCodeError, match="private per-process key"):
        await controller.start_local_workers(1)
    assert controller.local_workers == {}
    # The operator's allow-list admits unsigned arguments of its modules.
    monkeypatch.setenv(ENV_ALLOW_MODULES, "tests")
    await store.workers.set_start_args(ARGS)
    [wid] = await controller.start_local_workers(1)
    assert controller.local_workers[wid].spec.fun == "tests.funcs:square"


async def test_controller_signs_what_it_stores_and_runs_it_again(
    controller: Controller, store: Store, network_id: str
) -> None:
    await controller.start_local_workers(1, fun=funcs.square, concurrency=2)
    stored = await store.workers.get_start_args()
    assert stored is not None
    assert StartArgsPolicy(signing_key()).check(stored, network_id).startswith("signed")
    # Its own signature lets it start more workers from what it stored.
    [more] = await controller.start_local_workers(1)
    assert controller.local_workers[more].spec.concurrency == 2


async def test_restart_uses_the_spec_in_memory_not_what_redis_holds(
    controller: Controller, store: Store, network_id: str, tmp_path: Path
) -> None:
    [old] = await controller.start_local_workers(1, fun=funcs.square)
    await controller.wait_for_workers(1, timeout=30)
    # Overwritten with arguments the controller itself would accept (its own signature):
    # a restart must not read them at all.
    await store.workers.set_start_args(sign_start_args({"fun": "os:system"}, network_id))
    os.kill(controller.local_workers[old].process.pid, signal.SIGKILL)
    await anyio.to_thread.run_sync(controller.local_workers[old].process.wait, 30)
    with anyio.fail_after(30):
        while old not in await controller.detect_lost_workers(restart_local_workers=True):
            await anyio.sleep(0.05)
    [new] = [w for w in controller.local_workers if w != old]
    assert controller.local_workers[new].spec.fun == "tests.funcs:square"
    assert "tests.funcs:square" in controller.local_workers[new].process.args  # type: ignore[operator]
    keys = await controller.push_tasks([{"x": 3}])
    table = await controller.wait_for_tasks(keys, timeout=30)
    assert (table[0]["y"], table[0]["worker_id"]) == (9, new)
