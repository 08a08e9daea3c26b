"""``python -m rushpy.worker`` as real processes against the suite's server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from rushpy import Controller, RedisConfig
from tests import funcs
from tests.helpers import eventually

# Request the backend fixture explicitly: the anyio plugin otherwise re-creates the call spec of
# async tests that lack it and drops their own parametrization.
pytestmark = pytest.mark.usefixtures("anyio_backend")

REPO = Path(__file__).resolve().parents[1]


def worker_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["RUSHPY_REDIS_URL"] = url
    env.pop("REDIS_URL", None)
    env.pop("RUSHPY_REDIS_PASSWORD", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the worker CLI to completion (for invocations that must exit by themselves)."""
    return subprocess.run(
        [sys.executable, "-m", "rushpy.worker", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def dead_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerProcess:
    """A worker process with its output in files (no pipe can fill up and block it)."""

    def __init__(self, args: list[str], env: dict[str, str], out_dir: Path) -> None:
        self.stdout_path = out_dir / "stdout.txt"
        self.stderr_path = out_dir / "stderr.txt"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rushpy.worker", *args],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def send_signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        try:
            return await anyio.to_thread.run_sync(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker did not exit within {timeout} s; stderr:\n{self.stderr}")


@pytest.fixture
def spawn(config: RedisConfig, tmp_path: Path) -> Iterator[Callable[[list[str]], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(args: list[str]) -> WorkerProcess:
        out_dir = tmp_path / f"worker-{len(started)}"
        out_dir.mkdir()
        proc = WorkerProcess(args, worker_env(config.to_url(include_password=True)), out_dir)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait(10)


async def worker_state(controller: Controller, worker_id: str) -> str:
    rows = [r for r in await controller.worker_info() if r["worker_id"] == worker_id]
    assert len(rows) == 1, rows
    return str(rows[0]["state"])


async def wait_until_running(controller: Controller, key: str) -> None:
    with anyio.fail_after(15):
        while not await controller.is_running_task(key):
            await anyio.sleep(0.02)


# -- running tasks ---------------------------------------------------------------------------
async def test_cli_worker_runs_tasks_and_exits_on_sigterm(
    controller: Controller, network_id: str, spawn: Callable[[list[str]], WorkerProcess]
) -> None:
    wid = "cli-square"
    proc = spawn(["--network", network_id, "--fun", "tests.funcs:square", "--worker-id", wid])
    await controller.wait_for_workers(worker_ids=[wid], timeout=30)
    assert await worker_state(controller, wid) == "running"
    keys = await controller.push_tasks([{"x": i} for i in range(20)])
    table = await controller.wait_for_tasks(keys, timeout=30)
    assert set(table["state"]) == {"finished"}
    assert {r["x"]: r["y"] for r in table} == {i: i * i for i in range(20)}
    assert set(table["worker_id"]) == {wid}
    rows = [r for r in await controller.worker_info() if r["worker_id"] == wid]
    assert rows[0]["pid"] == proc.process.pid

    proc.send_signal(signal.SIGTERM)  # the worker is idle, waiting for tasks
    assert await proc.wait(15) == 0, proc.stderr
    assert await worker_state(controller, wid) == "terminated"
    assert (await controller.status()).n_running_workers == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_terminates_after_the_running_task(
    controller: Controller, network_id: str, spawn: Callable[[list[str]], WorkerProcess], sig: signal.Signals
) -> None:
    wid = f"cli-{sig.name.lower()}"
    proc = spawn(["--network", network_id, "--fun", "tests.funcs:sleepy", "--worker-id", wid])
    await controller.wait_for_workers(worker_ids=[wid], timeout=30)
    keys = await controller.push_tasks([{"x": 5, "duration": 1.0}, {"x": 6, "duration": 1.0}])
    await wait_until_running(controller, keys[0])

    proc.send_signal(sig)
    assert await proc.wait(20) == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    rows = {r["key"]: r for r in await controller.fetch_tasks()}
    # The task it was running was finished, not abandoned; the next one was not started.
    assert rows[keys[0]]["state"] == "finished", rows[keys[0]]
    assert rows[keys[0]]["y"] == 5
    assert rows[keys[0]]["worker_id"] == wid
    assert rows[keys[1]]["state"] == "queued"
    assert await worker_state(controller, wid) == "terminated"
    assert (await controller.status()).n_running_tasks == 0


@pytest.mark.parametrize("fun", ["tests.funcs:async_sleepy", "tests.funcs:sleepy"])
async def test_second_sigint_kills_at_once(
    controller: Controller, network_id: str, spawn: Callable[[list[str]], WorkerProcess], fun: str
) -> None:
    wid = "cli-double-sigint"
    proc = spawn(["--network", network_id, "--fun", fun, "--worker-id", wid])
    await controller.wait_for_workers(worker_ids=[wid], timeout=30)
    keys = await controller.push_tasks([{"x": 1, "duration": 60}])
    await wait_until_running(controller, keys[0])
    proc.send_signal(signal.SIGINT)
    await anyio.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert await proc.wait(10) != 0
    assert await worker_state(controller, wid) == "killed"
    failed = await controller.fetch_failed_tasks()
    assert failed["key"] == keys
    assert wid in failed[0]["condition"]["message"]


async def test_without_fun_runs_stored_start_arguments(
    controller: Controller,
    network_id: str,
    spawn: Callable[[list[str]], WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Controller and worker share a signing key (the worker inherits this environment).
    monkeypatch.setenv("RUSHPY_SIGNING_KEY", "a-test-secret-of-enough-bytes")
    [local] = await controller.start_local_workers(1, fun=funcs.interval, concurrency=3)
    await controller.wait_for_workers(1, timeout=30)
    # Stop the worker the controller started so that only the manual one runs tasks.
    await controller.stop_workers("terminate", [local])
    assert await anyio.to_thread.run_sync(controller.local_workers[local].process.wait, 15) == 0

    wid = "cli-manual"
    proc = spawn(["--network", network_id, "--worker-id", wid])
    await controller.wait_for_workers(worker_ids=[wid], timeout=30)
    keys = await controller.push_tasks([{"x": i, "duration": 0.5} for i in range(3)])
    table = await controller.wait_for_tasks(keys, timeout=30)
    assert set(table["state"]) == {"finished"}, proc.stderr
    assert set(table["worker_id"]) == {wid}
    assert sorted(table["y"]) == [0, 1, 2]
    # The stored concurrency (3) applies too: the three tasks were in flight together.
    assert max(table["start"]) < min(table["end"]), (table["start"], table["end"])
    proc.send_signal(signal.SIGTERM)
    assert await proc.wait(15) == 0, proc.stderr


# -- errors ----------------------------------------------------------------------------------
def test_help_works_without_runpy_warning(config: RedisConfig) -> None:
    done = run_cli(["--help"], worker_env(config.to_url(include_password=True)))
    assert done.returncode == 0, done.stderr
    assert "--network" in done.stdout and "--fun" in done.stdout
    assert "RuntimeWarning" not in done.stderr
    assert done.stderr == ""


def test_without_fun_and_without_start_arguments_exits_2(config: RedisConfig, network_id: str) -> None:
    done = run_cli(["--network", network_id], worker_env(config.to_url(include_password=True)))
    assert done.returncode == 2, done.stderr
    assert "--fun" in done.stderr
    assert network_id in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("fun", "named"),
    [
        ("tests.no_such_module:square", "tests.no_such_module"),
        ("tests.funcs:no_such_function", "no_such_function"),
        ("tests/no_such_file.py:square", "no_such_file.py"),
        ("tests.funcs", "tests.funcs"),
    ],
)
def test_bad_fun_exits_2_naming_it(config: RedisConfig, network_id: str, fun: str, named: str) -> None:
    done = run_cli(["--network", network_id, "--fun", fun], worker_env(config.to_url(include_password=True)))
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("with_fun", [True, False])
def test_unreachable_url_exits_2(config: RedisConfig, network_id: str, with_fun: bool) -> None:
    # The environment names the working server: --url must take precedence over it.
    args = ["--network", network_id, "--url", f"redis://127.0.0.1:{dead_port()}/0"]
    if with_fun:
        args += ["--fun", "tests.funcs:square"]
    done = run_cli(args, worker_env(config.to_url(include_password=True)))
    assert done.returncode == 2, done.stderr
    assert "cannot reach Redis" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("concurrency", ["0", "-1"])
def test_invalid_concurrency_exits_2(network_id: str, concurrency: str) -> None:
    # An unreachable server: a worker that accepted the value would fail on connecting instead.
    env = worker_env(f"redis://127.0.0.1:{dead_port()}/0")
    done = run_cli(
        ["--network", network_id, "--fun", "tests.funcs:square", "--concurrency", concurrency], env
    )
    assert done.returncode == 2, done.stderr
    assert "concurrency" in done.stderr
    assert "Traceback" not in done.stderr


def test_worker_whose_controller_is_gone_exits_at_once(config: RedisConfig, network_id: str) -> None:
    env = worker_env(config.to_url(include_password=True))
    env["RUSHPY_PARENT_PID"] = "1"  # not our parent: the controller that started us is gone
    done = run_cli(["--network", network_id, "--fun", "tests.funcs:square"], env)
    assert done.returncode == 1, done.stderr
    assert "controller that started this worker is gone" in done.stderr
    assert "Traceback" not in done.stderr


# -- start arguments (issue 7: bugs 4 and 14) ------------------------------------------------
async def test_cli_worker_takes_the_stored_idle_timeout(
    controller: Controller, network_id: str, spawn: Callable[[list[str]], WorkerProcess]
) -> None:
    await controller.start_local_workers(1, fun=funcs.square, idle_timeout=0.5)
    wid = "cli-stored-idle"
    proc = spawn(["--network", network_id, "--worker-id", wid, "--allow-module", "tests"])
    # Without other flags it runs the stored idle timeout too: it leaves once the queue stayed empty.
    assert await proc.wait(30) == 0, proc.stderr
    assert await worker_state(controller, wid) == "terminated"


async def test_worker_started_before_the_controller_waits_for_start_arguments(
    controller: Controller,
    network_id: str,
    spawn: Callable[[list[str]], WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUSHPY_ALLOW_MODULES", "other,tests.funcs")  # the allow-list from the environment
    wid = "cli-early"
    proc = spawn(["--network", network_id, "--worker-id", wid, "--wait-for-start-args", "60"])
    await eventually(lambda: "waiting for a controller" in proc.stderr, "the worker waits", timeout=30)
    assert proc.process.poll() is None
    await controller.start_local_workers(1, fun=funcs.square, concurrency=2)
    await controller.wait_for_workers(worker_ids=[wid], timeout=30)
    keys = await controller.push_priority_tasks([{"x": i} for i in range(5)], [wid] * 5)
    table = await controller.wait_for_tasks(keys, timeout=30)
    assert set(table["worker_id"]) == {wid}
    assert table["y"] == [i * i for i in range(5)]
    proc.send_signal(signal.SIGTERM)
    assert await proc.wait(15) == 0, proc.stderr


def test_wait_for_start_arguments_is_bounded(config: RedisConfig, network_id: str) -> None:
    done = run_cli(
        ["--network", network_id, "--wait-for-start-args", "0.3"],
        worker_env(config.to_url(include_password=True)),
    )
    assert done.returncode == 2, done.stderr
    assert "waiting for a controller" in done.stderr
    assert "stores no start arguments" in done.stderr and "--wait-for-start-args" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("value", ["-1", "nan", "soon"])
def test_invalid_wait_for_start_args_exits_2(network_id: str, value: str) -> None:
    env = worker_env(f"redis://127.0.0.1:{dead_port()}/0")
    done = run_cli(["--network", network_id, "--wait-for-start-args", value], env)
    assert done.returncode == 2, done.stderr
    assert "wait" in done.stderr
    assert "Traceback" not in done.stderr
