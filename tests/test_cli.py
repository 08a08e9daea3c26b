"""The ``rushpy`` command (status, worker) as real processes against the suite's server."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

import rushpy
from rushpy import Controller, RedisConfig, Worker
from rushpy.cli.common import run

pytestmark = pytest.mark.usefixtures("anyio_backend")

REPO = Path(__file__).resolve().parents[1]


def env_for(config: RedisConfig | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RUSHPY_REDIS_URL")}
    if config is not None:
        env["RUSHPY_REDIS_URL"] = config.to_url(include_password=True)
    env["PYTHONPATH"] = str(REPO)
    return env


async def run_rushpy(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process([sys.executable, "-m", "rushpy", *args], cwd=REPO, env=env, check=False)


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_status_prints_counts_and_workers(controller: Controller, config: RedisConfig) -> None:
    await controller.push_tasks([{"x": 1}, {"x": 2}])
    async with Worker(controller.network_id, config=config, worker_id="status-worker"):
        done = await run_rushpy("status", "--network", controller.network_id, env=env_for(config))
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr
    assert f"network {controller.network_id}" in out.splitlines()[0]
    assert "queued" in out and "status-worker" in out and "running" in out
    assert done.stderr == b""
    # The same as JSON, for scripts.
    done = await run_rushpy("status", controller.network_id, "--json", env=env_for(config))
    found = json.loads(done.stdout)
    assert found["counts"]["n_queued_tasks"] == 2
    assert [(w["worker_id"], w["state"]) for w in found["workers"]] == [("status-worker", "terminated")]


async def test_status_of_an_unreachable_server_is_one_line(network_id: str) -> None:
    done = await run_rushpy(
        "status", "--network", network_id, "--url", f"redis://127.0.0.1:{dead_port()}/0", env=env_for()
    )
    assert done.returncode == 2
    err = done.stderr.decode()
    assert err.startswith("rushpy: error:") and "Traceback" not in err


async def test_status_into_a_closed_pipe_exits_quietly(controller: Controller, config: RedisConfig) -> None:
    await controller.push_tasks([{"x": 1}])
    # The reader is gone before anything is written: every write fails with EPIPE.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = await anyio.run_process(
            [sys.executable, "-m", "rushpy", "status", "--network", controller.network_id],
            cwd=REPO,
            env=env_for(config),
            stdout=write_end,
            check=False,
        )
    finally:
        os.close(write_end)
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "BrokenPipeError" not in err and "Traceback" not in err and "Exception ignored" not in err


async def test_status_piped_into_head(controller: Controller, config: RedisConfig) -> None:
    await controller.push_tasks([{"x": 1}])
    command = shlex.join([sys.executable, "-m", "rushpy", "status", "--network", controller.network_id])
    done = await anyio.run_process(["sh", "-c", f"{command} | head -1"], cwd=REPO, env=env_for(config))
    assert f"network {controller.network_id}" in done.stdout.decode()
    assert done.stderr == b""


async def test_worker_subcommand_runs_tasks(
    controller: Controller, config: RedisConfig, tmp_path: Path
) -> None:
    wid = "rushpy-worker-subcommand"
    args = ["worker", "--network", controller.network_id, "--fun", "tests.funcs:square", "--worker-id", wid]
    with open(tmp_path / "stderr.txt", "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "rushpy", *args],
            cwd=REPO,
            env=env_for(config),
            stdin=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        await controller.wait_for_workers(worker_ids=[wid], timeout=30)
        keys = await controller.push_tasks([{"x": 3}])
        assert (await controller.wait_for_tasks(keys, timeout=30))["y"] == [9]
        process.send_signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(process.wait, 15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text()


@pytest.mark.parametrize("args", [["--help"], ["worker", "--help"]])
async def test_help_without_warnings(args: list[str]) -> None:
    done = await run_rushpy(*args, env=env_for())
    assert done.returncode == 0
    assert done.stderr == b""
    if "worker" in args:
        out = done.stdout.decode()
        for flag in ("--network", "--url", "--fun", "--concurrency", "--wait-for-start-args"):
            assert flag in out


def test_ctrl_c_ends_a_command_with_130_and_no_traceback() -> None:
    def interrupted() -> int:
        raise KeyboardInterrupt

    assert run(interrupted, "rushpy") == 130


def test_errors_of_a_task_group_print_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def failing() -> int:
        raise ExceptionGroup("task group", [rushpy.ConfigError("invalid x=1: use 2")])

    assert run(failing, "rushpy") == 2
    assert capsys.readouterr().err == "rushpy: error: invalid x=1: use 2\n"

    def mixed() -> int:
        raise ExceptionGroup("task group", [rushpy.ConfigError("bad"), ValueError("bug")])

    with pytest.raises(ExceptionGroup):
        run(mixed, "rushpy")
