"""EmbeddedServer life cycle and the `python -m rushpy server` command.

Every test here starts its own server; the session `server` fixture is left alone.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rushpy import ConnectionFailedError, EmbeddedServer, EmbeddedServerError, RedisConfig
from rushpy.connection import check_connection, create_client
from rushpy.server import ENV_BINARY, find_server_binary

ROOT = Path(__file__).resolve().parent.parent


# -- helpers -----------------------------------------------------------------------------------


def _is_dead(pid: int) -> bool:
    """Whether no live process has this pid (a zombie waiting to be reaped counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _wait_dead(pid: int, within: float = 15.0) -> bool:
    """Poll until the process is gone; a generous bound, not a timing assertion."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _is_dead(pid):
            return True
        time.sleep(0.02)
    return _is_dead(pid)


def _ping(config: RedisConfig, password: str | None = None) -> bool:
    if config.scheme == "unix":
        assert config.path is not None
        client = redis.Redis(unix_socket_path=config.path, password=password, socket_timeout=5)
    else:
        client = redis.Redis(host=config.host, port=config.port, password=password, socket_timeout=5)
    try:
        return bool(client.ping())
    finally:
        client.close()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
    env.pop(ENV_BINARY, None)
    return env


@pytest.fixture
def clean_server_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(ENV_BINARY, raising=False)
    yield


# -- start / stop ------------------------------------------------------------------------------


def test_start_answers_ping_and_stop_cleans_up() -> None:
    server = EmbeddedServer()
    server.start()
    try:
        assert server.running
        pid = server.pid
        assert pid is not None
        data_dir = server.data_dir
        assert data_dir.is_dir()
        assert data_dir.name.startswith("rushpy-server-")
        config = server.config
        assert config.scheme == "redis"
        assert config.host == "127.0.0.1"
        assert config.port == server.port
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert _ping(config)
    finally:
        server.stop()
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not data_dir.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((config.host, config.port), timeout=5).close()


def test_port_is_picked_free() -> None:
    with EmbeddedServer() as first, EmbeddedServer() as second:
        assert first.port is not None
        assert second.port is not None
        assert first.port != second.port
        assert 1024 <= first.port <= 65535
        assert _ping(first.config)
        assert _ping(second.config)
        # The port is really taken by the server now.
        with socket.socket() as sock, pytest.raises(OSError):
            sock.bind(("127.0.0.1", first.port))


def test_fixed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with EmbeddedServer(port=port) as server:
        assert server.port == port
        assert server.config.port == port
        assert _ping(server.config)


def test_start_twice_is_a_no_op() -> None:
    with EmbeddedServer() as server:
        pid = server.pid
        assert server.start() is server
        assert server.pid == pid


def test_stop_twice_and_stop_unstarted() -> None:
    EmbeddedServer().stop()  # nothing to do, no error
    server = EmbeddedServer().start()
    server.stop()
    server.stop()
    assert not server.running


def test_config_before_start() -> None:
    server = EmbeddedServer()
    assert not server.running
    assert server.pid is None
    with pytest.raises(EmbeddedServerError, match=r"start\(\)"):
        _ = server.config
    with pytest.raises(EmbeddedServerError, match=r"start\(\)"):
        _ = server.data_dir


def test_given_data_dir_is_kept(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with EmbeddedServer(data_dir=data_dir, appendonly=True) as server:
        assert server.data_dir == data_dir
        client = redis.Redis(port=server.port)
        client.set("k", "v")
        client.close()
    assert data_dir.is_dir()
    assert any(data_dir.iterdir())


def test_unix_socket() -> None:
    with EmbeddedServer(unix_socket=True) as server:
        config = server.config
        assert config.scheme == "unix"
        assert config.path == str(server.socket_path)
        assert server.socket_path.is_socket()
        assert server.url.startswith("unix://")
        assert _ping(config)
        data_dir = server.data_dir
    assert not data_dir.exists()


async def test_unix_socket_with_rushpy_client() -> None:
    async with EmbeddedServer(unix_socket=True) as server:
        client = create_client(server.config)
        try:
            await check_connection(server.config)
            await client.set("a", b"1")
            assert await client.get("a") == b"1"
        finally:
            await client.aclose()


async def test_password_required() -> None:
    async with EmbeddedServer(password="s3cret-pw") as server:
        config = server.config
        assert config.password is not None
        assert config.password.get_secret_value() == "s3cret-pw"
        assert "s3cret-pw" not in server.url
        assert "s3cret-pw" not in repr(config)

        await check_connection(config)

        anonymous = RedisConfig(host="127.0.0.1", port=server.port)
        with pytest.raises(ConnectionFailedError) as info:
            await check_connection(anonymous)
        assert "credentials" in str(info.value)
        assert str(server.port) in str(info.value)

        wrong = RedisConfig(host="127.0.0.1", port=server.port, password="not-it")
        with pytest.raises(ConnectionFailedError) as info:
            await check_connection(wrong)
        assert "not-it" not in str(info.value)


async def test_connection_to_stopped_server_fails() -> None:
    async with EmbeddedServer() as server:
        config = server.config
    with pytest.raises(ConnectionFailedError, match=str(config.port)):
        await check_connection(config)


async def test_async_context_manager() -> None:
    async with EmbeddedServer() as server:
        assert server.running
        pid = server.pid
        assert pid is not None
        data_dir = server.data_dir
        client = create_client(server.config)
        try:
            assert await client.ping()
        finally:
            await client.aclose()
    assert not server.running
    assert _wait_dead(pid)
    assert not data_dir.exists()


def test_context_manager_stops_on_error() -> None:
    with pytest.raises(RuntimeError, match="boom"), EmbeddedServer() as server:
        pid = server.pid
        raise RuntimeError("boom")
    assert pid is not None
    assert _is_dead(pid)


def test_kill_keeps_files() -> None:
    server = EmbeddedServer(appendonly=True).start()
    try:
        pid = server.pid
        assert pid is not None
        server.kill()
        assert not server.running
        assert _is_dead(pid)
        assert server.data_dir.is_dir()
    finally:
        server.stop()


# -- restart -----------------------------------------------------------------------------------


def test_restart_keeps_port_and_data_with_appendonly() -> None:
    with EmbeddedServer(appendonly=True) as server:
        port = server.port
        old_pid = server.pid
        assert old_pid is not None
        data_dir = server.data_dir
        client = redis.Redis(port=server.port, socket_timeout=5)
        client.set("survives", "yes")
        client.rpush("list", 1, 2, 3)
        client.close()

        server.restart()

        assert server.running
        assert server.port == port
        assert server.pid != old_pid
        assert _is_dead(old_pid)
        assert server.data_dir == data_dir
        client = redis.Redis(port=server.port, socket_timeout=5)
        assert client.get("survives") == b"yes"
        assert client.lrange("list", 0, -1) == [b"1", b"2", b"3"]
        client.close()
    assert not data_dir.exists()


def test_restart_without_appendonly_loses_data_but_keeps_port() -> None:
    with EmbeddedServer() as server:
        port = server.port
        client = redis.Redis(port=server.port, socket_timeout=5)
        client.set("gone", "soon")
        client.close()
        server.restart()
        assert server.port == port
        client = redis.Redis(port=server.port, socket_timeout=5)
        assert client.get("gone") is None
        client.close()


def test_restart_unix_socket() -> None:
    with EmbeddedServer(unix_socket=True, appendonly=True) as server:
        path = server.socket_path
        client = redis.Redis(unix_socket_path=str(path), socket_timeout=5)
        client.set("k", "v")
        client.close()
        server.restart()
        assert server.socket_path == path
        client = redis.Redis(unix_socket_path=str(path), socket_timeout=5)
        assert client.get("k") == b"v"
        client.close()


# -- binaries ----------------------------------------------------------------------------------


def test_find_server_binary(clean_server_env: None) -> None:
    binary = find_server_binary()
    assert binary.is_file()
    assert os.access(binary, os.X_OK)


def test_binary_env_not_executable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "not-a-server"
    fake.write_text("plain text\n")
    fake.chmod(0o644)
    monkeypatch.setenv(ENV_BINARY, str(fake))
    server = EmbeddedServer()
    with pytest.raises(EmbeddedServerError) as info:
        server.start()
    message = str(info.value)
    assert ENV_BINARY in message
    assert str(fake) in message
    assert "executable" in message
    assert not server.running


def test_binary_env_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere" / "valkey-server"
    monkeypatch.setenv(ENV_BINARY, str(missing))
    with pytest.raises(EmbeddedServerError, match=re.escape(str(missing))):
        EmbeddedServer().start()


def test_binary_env_used(monkeypatch: pytest.MonkeyPatch, clean_server_env: None) -> None:
    real = find_server_binary()
    monkeypatch.setenv(ENV_BINARY, str(real))
    assert find_server_binary() == real
    with EmbeddedServer() as server:
        assert _ping(server.config)


def test_binary_that_does_not_serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake-server"
    fake.write_text("#!/bin/sh\necho 'fake server refuses to run' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    server = EmbeddedServer(binary=fake, start_timeout=5)
    with pytest.raises(EmbeddedServerError) as info:
        server.start()
    assert "fake server refuses to run" in str(info.value)
    assert str(fake) in str(info.value)
    assert not server.running
    # A failed start leaves no temporary directory behind.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("rushpy-server-")) == []


# -- process hygiene ---------------------------------------------------------------------------


PARENT_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from rushpy import EmbeddedServer

    server = EmbeddedServer().start()
    print(server.pid, server.port, flush=True)
    if sys.argv[1] == "exit":
        sys.stdin.readline()  # exit only once the test has seen the server answer
        os._exit(0)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_dead_parent_leaves_no_server(tmp_path: Path, how: str) -> None:
    env = _env()
    env["TMPDIR"] = str(tmp_path)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT_SCRIPT, how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert parent.stdout is not None
        assert parent.stdin is not None
        line = parent.stdout.readline()
        assert line, parent.stderr.read() if parent.stderr else ""
        pid_text, port_text = line.split()
        server_pid = int(pid_text)
        # The parent is still alive here in both cases (it waits for stdin or sleeps),
        # so this PING cannot race the shutdown that the test is about.
        assert _ping(RedisConfig(port=int(port_text)))
        if how == "sigkill":
            parent.send_signal(signal.SIGKILL)
        else:
            parent.stdin.write("exit\n")
            parent.stdin.flush()
        parent.wait(timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert _wait_dead(server_pid), f"server {server_pid} outlived its parent"


def test_server_outlives_the_thread_that_started_it() -> None:
    # PR_SET_PDEATHSIG fires when the forking *thread* ends. `async with
    # EmbeddedServer()` starts it in an anyio worker thread that ends after 10 s
    # idle: the server must not die with that thread.
    server = EmbeddedServer()
    starter = threading.Thread(target=server.start)
    starter.start()
    starter.join()
    try:
        tid = starter.native_id
        assert tid is not None
        # Once the OS thread is gone, a parent-death signal would have been sent.
        deadline = time.monotonic() + 15
        while Path(f"/proc/self/task/{tid}").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not Path(f"/proc/self/task/{tid}").exists()
        # Give a signalled server ample time to act on it (it shuts down within
        # ~0.1 s); a healthy one answers throughout.
        for _ in range(10):
            assert server.running
            assert _ping(server.config)
            time.sleep(0.1)
    finally:
        server.stop()


def test_child_whose_parent_died_before_prctl_exits() -> None:
    # The race the pre-exec check closes: the parent died between fork and the
    # parent-death request, so no signal would ever come. A pid that is not our
    # parent stands for "the parent is gone".
    from rushpy.server import _die_with_parent

    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        preexec_fn=functools.partial(_die_with_parent, os.getpid() + 1_000_000),  # noqa: PLW1509
    )
    try:
        assert child.wait(timeout=30) == 1
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # With the real parent, the child goes on to exec (Popen returns after the exec).
    alive = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        preexec_fn=functools.partial(_die_with_parent, os.getpid()),  # noqa: PLW1509
    )
    try:
        assert alive.poll() is None
    finally:
        alive.kill()
        alive.wait()


def test_atexit_stops_server_on_normal_exit(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        from rushpy import EmbeddedServer
        server = EmbeddedServer().start()
        print(server.pid, server.data_dir, flush=True)
        # no stop(): interpreter exit must clean up
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    pid_text, data_dir = result.stdout.split()
    assert _wait_dead(int(pid_text))
    assert not Path(data_dir).exists()


# -- the CLI -----------------------------------------------------------------------------------

URL_LINE = re.compile(r"running at (?P<url>\S+) \(pid (?P<pid>\d+)\)")


@pytest.mark.parametrize("extra", [[], ["--unix-socket"]])
def test_cli_server_prints_url_and_stops_on_sigint(extra: list[str]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "rushpy", "server", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        line = process.stdout.readline()
        match = URL_LINE.search(line)
        assert match, (line, process.stderr.read() if process.poll() is not None else "")
        config = RedisConfig.from_url(match["url"])
        server_pid = int(match["pid"])
        assert config.scheme == ("unix" if extra else "redis")
        assert _ping(config)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, process.stderr.read()
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert _wait_dead(server_pid)
    if config.path:
        assert not Path(config.path).parent.exists()


CLI_EARLY_SIGINT = textwrap.dedent(
    """
    import os, signal, sys
    from rushpy.cli import main

    class Stdout:
        # Deliver Ctrl-C the moment the URL has been printed (a user who reads
        # fast, or a supervisor that stops the server right away).
        def __init__(self, inner):
            self.inner = inner
        def write(self, text):
            n = self.inner.write(text)
            if "running at" in text:
                self.inner.flush()
                os.kill(os.getpid(), signal.SIGINT)
            return n
        def flush(self):
            self.inner.flush()

    sys.stdout = Stdout(sys.stdout)
    code = main(["server"])
    print("exit code", code, flush=True)
    sys.exit(code)
    """
)


def test_cli_server_stops_cleanly_on_immediate_sigint() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CLI_EARLY_SIGINT],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    match = URL_LINE.search(result.stdout)
    assert match, result.stdout + result.stderr
    assert _wait_dead(int(match["pid"]))
    assert "KeyboardInterrupt" not in result.stderr
    assert result.returncode == 0, result.stderr
    assert "exit code 0" in result.stdout


@pytest.mark.parametrize("password", ["s3cret-pw", 'with space, "quotes" and \\ backslash', "ünï\tcode"])
async def test_password_never_on_the_command_line(password: str) -> None:
    """Every user of the host can read a process's argv; the password goes in a private file."""
    async with EmbeddedServer(password=password) as server:
        assert server.pid is not None
        argv = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert password.encode() not in argv
        auth_file = server.data_dir / "rushpy-auth.conf"
        assert auth_file.stat().st_mode & 0o077 == 0  # readable by its owner only
        await check_connection(server.config)  # the server took the password as given
        anonymous = RedisConfig(host="127.0.0.1", port=server.port)
        with pytest.raises(ConnectionFailedError, match="credentials"):
            await check_connection(anonymous)
