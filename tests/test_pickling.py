"""Signed pickles and signed function names, against real worker processes.

A payload that runs code on load (``__reduce__`` touching a marker file) shows
that a refused pickle is never unpickled; each refusal has a control run, signed
correctly, that does create the marker, so the test can see code run.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import rushpy
from rushpy import ConfigError, RedisConfig, UntrustedCodeError, WorkerFunctionError
from rushpy.executor import Executor
from rushpy.pickling import ENV_ALLOW_PICKLE, dumps, loads, mac, pickle_allowed, verify
from rushpy.signing import ENV_SIGNING_KEY, SigningKey, signing_key
from rushpy.trampoline import TRAMPOLINE, run

OTHER_KEY = SigningKey(b"another-key-0123456789abcdef")


class TouchOnLoad:
    """Unpickling this creates ``path``: what an attacker's pickle would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def payload(marker: Path, key: SigningKey | None) -> dict[str, Any]:
    """A task for the trampoline whose pickle touches ``marker`` when loaded (signed with ``key``)."""
    data, signature = dumps((bool, [[[TouchOnLoad(marker)], {}]]), key or OTHER_KEY, "call")
    return {"pickle": data, "mac": signature if key is not None else None}


def condition(rush: rushpy.blocking.Controller, key: str) -> dict[str, Any]:
    rush.wait_for_tasks([key], timeout=60)
    row = rush.fetch_task(key)
    assert row["state"] == "failed", row
    return dict(row["condition"])


def test_forged_pickles_are_refused_and_nothing_runs(
    config: RedisConfig, network_id: str, tmp_path: Path
) -> None:
    with rushpy.blocking.Controller(network_id, config=config) as rush:
        rush.start_local_workers(1, fun=TRAMPOLINE, allow_pickle=True)
        unsigned, forged, good = (tmp_path / name for name in ("unsigned", "forged", "good"))
        bad_keys = rush.push_tasks([payload(unsigned, None), payload(forged, OTHER_KEY)])
        for key in bad_keys:
            cond = condition(rush, key)
            assert cond["type"] == "UntrustedCodeError"
            assert "nothing was unpickled" in cond["message"]
        # Control: the same payload signed with the workers' key runs, so the marker check works.
        [ok] = rush.push_tasks([payload(good, signing_key())])
        rush.wait_for_tasks([ok], timeout=60)
        row = rush.fetch_task(ok)
        assert row["state"] == "finished", row
        assert loads(row["result_pickle"], row["result_mac"], signing_key(), "result") == [False]
        assert good.exists()
        assert not unsigned.exists()
        assert not forged.exists()
        rush.reset(workers=True)


def test_worker_without_opt_in_refuses_signed_pickles(
    config: RedisConfig, network_id: str, tmp_path: Path
) -> None:
    with rushpy.blocking.Controller(network_id, config=config) as rush:
        rush.start_local_workers(1, fun=TRAMPOLINE)  # no allow_pickle
        marker = tmp_path / "marker"
        [key] = rush.push_tasks([payload(marker, signing_key())])
        cond = condition(rush, key)
        assert cond["type"] == "UntrustedCodeError"
        assert "--allow-pickle" in cond["message"]
        assert ENV_ALLOW_PICKLE in cond["message"]
        assert not marker.exists()
        rush.reset(workers=True)


def test_unsigned_function_names_are_refused_and_not_imported(
    config: RedisConfig, network_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module whose import leaves a marker: the workers see tmp_path on their PYTHONPATH.
    module = f"evil_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported"
    (tmp_path / f"{module}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\ndef f():\n    return 7\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = f"{module}:f"
    with rushpy.blocking.Controller(network_id, config=config) as rush:
        rush.start_local_workers(1, fun=TRAMPOLINE)
        calls: list[Any] = [[[], {}]]
        signed = mac(signing_key(), fn.encode(), "function")
        bad = rush.push_tasks(
            [
                {"fn": fn, "calls": calls},
                {"fn": fn, "mac": mac(OTHER_KEY, fn.encode(), "function"), "calls": calls},
                # A signature made for another purpose (a pickle's) does not sign a name.
                {"fn": fn, "mac": mac(signing_key(), fn.encode(), "call"), "calls": calls},
            ]
        )
        for key in bad:
            cond = condition(rush, key)
            assert cond["type"] == "UntrustedCodeError"
            assert ENV_SIGNING_KEY in cond["message"]
        assert not marker.exists()
        # Control: signed with the workers' key, the module is imported and the function runs.
        [ok] = rush.push_tasks([{"fn": fn, "mac": signed, "calls": calls}])
        rush.wait_for_tasks([ok], timeout=60)
        assert rush.fetch_task(ok)["results"] == [7]
        assert marker.exists()
        # Not an Executor task at all.
        [empty] = rush.push_tasks([{"x": 1}])
        assert "not an Executor task" in condition(rush, empty)["message"]
        rush.reset(workers=True)


def test_missing_cloudpickle_is_a_clear_error(config: RedisConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    key = signing_key()
    data, signature = dumps([1], key, "result")
    monkeypatch.setitem(sys.modules, "cloudpickle", None)  # import cloudpickle now fails
    with pytest.raises(ConfigError, match=r"pip install 'rushpy\[pickle\]'"):
        dumps([1], key, "call")
    with pytest.raises(ConfigError, match="cloudpickle"):
        loads(data, signature, key, "result")
    ex = Executor(config=config, pickle=True)
    try:
        with pytest.raises(ConfigError, match="cloudpickle"):
            ex.submit(len, [1])
    finally:
        ex.shutdown()
    # A worker that opted in but lacks cloudpickle: the same error fails the task.
    monkeypatch.setenv(ENV_SIGNING_KEY, key.secret.decode())
    monkeypatch.setenv(ENV_ALLOW_PICKLE, "1")
    with pytest.raises(ConfigError, match=r"rushpy\[pickle\]"):
        run(pickle=data, mac=mac(key, data, "call"))


def test_signatures_are_bound_to_key_and_purpose(monkeypatch: pytest.MonkeyPatch) -> None:
    key = signing_key()
    data, signature = dumps({"a": 1}, key, "call")
    assert verify(key, data, signature, "call")
    assert not verify(key, data, signature, "result")
    assert not verify(OTHER_KEY, data, signature, "call")
    assert not verify(None, data, signature, "call")
    assert not verify(key, data, None, "call")
    with pytest.raises(UntrustedCodeError, match="no signing key"):
        loads(data, signature, None, "call")
    with pytest.raises(UntrustedCodeError, match="does not verify"):
        loads("not bytes", signature, key, "call")
    monkeypatch.setenv(ENV_ALLOW_PICKLE, "yes")
    assert pickle_allowed()
    monkeypatch.setenv(ENV_ALLOW_PICKLE, "0")
    assert not pickle_allowed()


def test_trampoline_rejects_malformed_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_SIGNING_KEY, signing_key().secret.decode())
    signature = mac(signing_key(), b"builtins:len", "function")
    assert run("builtins:len", [[[[1, 2]], {}]], signature) == {"results": [2]}
    with pytest.raises(rushpy.TaskError, match="not a list"):
        run("builtins:len", "abc", signature)
    with pytest.raises(rushpy.TaskError, match="not an \\[args, kwargs\\] pair"):
        run("builtins:len", [[[1]]], signature)


def test_lambda_without_pickle_fails_at_once(config: RedisConfig) -> None:
    ex = Executor(config=config)  # no workers: the error comes before anything is pushed
    try:
        with pytest.raises(WorkerFunctionError, match=r"pickle=True.*--allow-pickle"):
            ex.submit(lambda: 1)
        with pytest.raises(WorkerFunctionError, match="pickle=True"):
            ex.map(lambda x: x, [1])
        assert ex.controller.n_tasks() == 0
    finally:
        ex.shutdown()


def test_pickle_runs_lambdas_and_closures(config: RedisConfig) -> None:
    offset = 10

    def add(x: int) -> int:  # a closure: not importable by name
        return x + offset

    with Executor(n_workers=1, config=config, pickle=True) as ex:
        assert ex.submit(lambda x, y=1: x * y, 3, y=4).result(timeout=60) == 12
        assert list(ex.map(add, range(5), chunksize=2)) == [10, 11, 12, 13, 14]
        # Arguments and results need not be msgpack values.
        assert ex.submit(lambda s: s | {3}, {1, 2}).result(timeout=60) == {1, 2, 3}
        with pytest.raises(ZeroDivisionError):
            ex.submit(lambda: 1 / 0).result(timeout=60)
