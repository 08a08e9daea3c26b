"""compose/docker-compose.yml runs: each service's command as a local process (Docker is not here).

The redis service's own command (its flags, its password file) starts a local
redis-server on a free port; the worker service's command, with the service's
environment (host ``redis`` mapped to that port), starts two workers; the
controller service's command pushes tasks they run. The password only ever
travels in the environment.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import redis.asyncio
import yaml

from rushpy.server import find_server_binary
from tests.helpers import REPO, eventually, wait_exit

pytestmark = pytest.mark.usefixtures("anyio_backend")

COMPOSE = REPO / "compose" / "docker-compose.yml"
VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation: ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``; ``$$`` is a ``$``."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, kind, arg = match.groups()
        if env.get(name):
            return env[name]
        if kind == ":?":
            raise AssertionError(f"compose would stop: {arg}")
        return arg if kind == ":-" else ""

    return VARIABLE.sub(one, value)


def service(name: str, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """A service's command (a list) and environment, interpolated as compose would."""
    spec = yaml.safe_load(COMPOSE.read_text())["services"][name]
    command = spec["command"]
    assert isinstance(command, list), f"{name}: give the command as a list (no shell word splitting)"
    environment = {k: interpolate(str(v), env) for k, v in spec.get("environment", {}).items()}
    return [interpolate(str(arg), env) for arg in command], environment


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_layout_and_no_password_on_any_command_line() -> None:
    spec: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert set(services) == {"redis", "worker", "controller"}
    assert "redis-data:/data" in services["redis"]["volumes"] and "redis-data" in spec["volumes"]
    assert services["worker"]["deploy"]["replicas"] >= 2  # scalable: --scale worker=N
    password = secrets.token_hex(16)
    env = {"RUSHPY_REDIS_PASSWORD": password}
    for name in services:
        command, environment = service(name, env)
        assert password not in " ".join(command), f"{name}: password on the command line"
        assert environment["RUSHPY_REDIS_PASSWORD"] == password
    with pytest.raises(AssertionError, match="put RUSHPY_REDIS_PASSWORD"):
        service("worker", {})  # no password configured: compose refuses to start


async def test_services_run_locally(tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    password = secrets.token_hex(16)
    env = {"RUSHPY_REDIS_PASSWORD": password}
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()

    # The redis service: its own shell command, container paths mapped to local ones.
    command, environment = service("redis", env)
    assert command[:2] == ["sh", "-c"]
    script = command[2]
    for container, here in [
        ("/tmp/redis-auth.conf", str(tmp_path / "redis-auth.conf")),
        ("--dir /data", f"--dir {data}"),
        ("--port 6379", f"--port {port}"),
        ("--bind 0.0.0.0", "--bind 127.0.0.1"),
        ("exec redis-server ", f"exec {find_server_binary()} "),
    ]:
        assert container in script, f"the redis command no longer has {container!r}"
        script = script.replace(container, here)
    redis_env = {"PATH": os.environ["PATH"], **environment}
    log = (tmp_path / "redis.log").open("wb")
    server = subprocess.Popen(["sh", "-c", script], env=redis_env, stdout=log, stderr=subprocess.STDOUT)
    processes.append(server)
    client = redis.asyncio.Redis(host="127.0.0.1", port=port, password=password)
    try:

        async def up() -> bool:
            try:
                return bool(await client.ping())
            except redis.ConnectionError:
                assert server.poll() is None, (tmp_path / "redis.log").read_text()  # flags refused
                return False

        await eventually(up, "the redis service answers", timeout=30)
        assert (await client.config_get("appendonly"))["appendonly"] == "yes"
        assert (await client.config_get("maxmemory-policy"))["maxmemory-policy"] == "noeviction"
        async with redis.asyncio.Redis(host="127.0.0.1", port=port) as anonymous:
            with pytest.raises(redis.AuthenticationError):
                await anonymous.ping()  # the password from the environment is required

        # Its healthcheck (compose waits for it before starting workers) passes.
        check = yaml.safe_load(COMPOSE.read_text())["services"]["redis"]["healthcheck"]["test"]
        assert check[0] == "CMD-SHELL"
        probe = interpolate(check[1], env).replace("redis-cli ", f"redis-cli -p {port} ")
        assert subprocess.run(["sh", "-c", probe], env=redis_env, timeout=30, check=False).returncode == 0

        # Workers and controller: their commands, their environment, host `redis` mapped here.
        def local(name: str) -> tuple[list[str], dict[str, str]]:
            argv, service_env = service(name, env)
            assert argv[0] == "python"
            full = {k: v for k, v in os.environ.items() if not k.endswith("REDIS_URL")}
            full.pop("RUSHPY_REDIS_PASSWORD", None)
            full.update({k: v.replace("redis:6379", f"127.0.0.1:{port}") for k, v in service_env.items()})
            assert "@" not in full["RUSHPY_REDIS_URL"]  # the password comes from its own variable
            return [sys.executable, *argv[1:]], full

        argv, worker_env = local("worker")
        replicas = yaml.safe_load(COMPOSE.read_text())["services"]["worker"]["deploy"]["replicas"]
        workers = []
        for i in range(replicas):
            out = (tmp_path / f"worker-{i}.log").open("wb")
            worker = subprocess.Popen(argv, cwd=REPO, env=worker_env, stdout=out, stderr=subprocess.STDOUT)
            processes.append(worker)
            workers.append(worker)

        argv, controller_env = local("controller")

        def run_controller() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*argv, "--timeout", "60"],
                cwd=REPO,
                env=controller_env,
                capture_output=True,
                text=True,
                timeout=100,
                check=False,
            )

        result = await anyio.to_thread.run_sync(run_controller)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{replicas} workers up" in result.stdout
        assert re.search(r"100 tasks finished by [12] workers", result.stdout), result.stdout
        assert "best y = 0." in result.stdout  # Branin's minimum, 0.397887, lies near the grid

        # docker stop sends SIGTERM: workers finish and exit cleanly.
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for i, worker in enumerate(workers):
            assert await wait_exit(worker, timeout=30) == 0, (tmp_path / f"worker-{i}.log").read_text()
    finally:
        await client.aclose()
        server.send_signal(signal.SIGTERM)  # `exec` made redis-server the shell's process
        await wait_exit(server, timeout=30)
        log.close()
    # Persistence was on: the append-only files are in the data volume.
    assert (data / "appendonlydir").is_dir() or list(data.glob("*.aof")), sorted(os.listdir(data))
