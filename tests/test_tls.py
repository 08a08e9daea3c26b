"""TLS end to end (issue 8, point 9): a private CA, a server certificate, client certificates.

A Debian/Ubuntu ``redis-server`` (built with TLS; the bundled Valkey is not)
listens on a TLS port only (``--port 0``) and requires client certificates
(``--tls-auth-clients yes``) and a password. The certificates come from the
``openssl`` command line, made fresh by the test. ``.ci/run`` installs both
when they are missing; a missing one fails these tests, never skips them.

The server certificate names ``localhost`` only, so connecting by
``127.0.0.1`` exercises the hostname check.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

import rushpy
from rushpy import Controller, EmbeddedServer, RedisConfig
from rushpy.acl import acl_setuser
from rushpy.cli import main as rushpy_main
from rushpy.connection import create_client
from rushpy.server import _free_port
from tests import funcs
from tests.acl_scenario import run_life_cycle
from tests.test_worker_cli import REPO, worker_env

pytestmark = pytest.mark.usefixtures("anyio_backend")

PASSWORD = "tls-pass:@/word"  # a test server's password, with characters that URLs must quote


@dataclass(frozen=True)
class TLSServer:
    """A TLS-only server and the files to reach it."""

    port: int
    ca: Path
    other_ca: Path
    cert: Path
    key: Path

    def config(self, **changes: object) -> RedisConfig:
        """Settings that reach the server; ``changes`` override them."""
        fields: dict[str, object] = {
            "scheme": "rediss",
            "host": "localhost",
            "port": self.port,
            "password": PASSWORD,
            "ssl_ca_certs": str(self.ca),
            "ssl_certfile": str(self.cert),
            "ssl_keyfile": str(self.key),
            "reconnect_budget": 2.0,
        }
        fields.update(changes)
        return RedisConfig(**fields)  # type: ignore[arg-type]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: install it (apt-get install redis-server openssl; .ci/run does)")
    return path


def _openssl(*args: str) -> None:
    subprocess.run([_tool("openssl"), *args], check=True, capture_output=True, timeout=60)


def _issue(folder: Path, name: str, subject: str, extensions: str, ca: str = "ca") -> None:
    """A key and a certificate for ``name``, signed by CA ``ca``."""
    (folder / f"{name}.ext").write_text(extensions)
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(folder / f"{name}.key"), "-out", str(folder / f"{name}.csr"), "-subj", subject,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(folder / f"{name}.csr"), "-CA", str(folder / f"{ca}.crt"),
        "-CAkey", str(folder / f"{ca}.key"), "-CAcreateserial", "-days", "2",
        "-out", str(folder / f"{name}.crt"), "-extfile", str(folder / f"{name}.ext"),
    )  # fmt: skip


def _ca(folder: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(folder / f"{name}.key"), "-out", str(folder / f"{name}.crt"), "-days", "2",
        "-subj", f"/CN=rushpy test {name}",
    )  # fmt: skip


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    folder = tmp_path_factory.mktemp("tls")
    _ca(folder, "ca")
    _ca(folder, "other-ca")
    _issue(folder, "server", "/CN=localhost", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _issue(folder, "client", "/CN=rushpy-client", "extendedKeyUsage=clientAuth\n")
    port = _free_port()
    # Unix socket for the readiness check (no TLS there); TCP only through TLS.
    server = EmbeddedServer(
        binary=_tool("redis-server"),
        unix_socket=True,
        password=PASSWORD,
        extra_args=[
            "--tls-port", str(port),
            "--tls-cert-file", str(folder / "server.crt"),
            "--tls-key-file", str(folder / "server.key"),
            "--tls-ca-cert-file", str(folder / "ca.crt"),
            "--tls-auth-clients", "yes",
        ],
    )  # fmt: skip
    with server:
        yield TLSServer(
            port, folder / "ca.crt", folder / "other-ca.crt", folder / "client.crt", folder / "client.key"
        )


# -- the controller, its local workers and their heartbeats ----------------------------------------
async def test_controller_and_local_workers_work_over_tls(tls: TLSServer, network_id: str) -> None:
    async with Controller(network_id, config=tls.config(), shutdown_timeout=5) as rush:
        try:
            # Local workers get the CA, certificate and key (and a heartbeat connection too).
            await rush.start_local_workers(2, fun=funcs.square, heartbeat_period=1)
            keys = await rush.push_tasks([{"x": i} for i in range(10)])
            table = await rush.wait_for_tasks(keys, timeout=60, detect_lost_workers=True)
            assert table["y"] == [i * i for i in range(10)]
            assert set(table["worker_id"]) <= set(rush.local_workers)
        finally:
            await rush.reset(workers=True)


# -- a worker started by hand -----------------------------------------------------------------------
@pytest.mark.parametrize("style", ["url query", "flags"])
async def test_cli_worker_over_tls(tls: TLSServer, network_id: str, style: str) -> None:
    config = tls.config()
    env = worker_env("redis://127.0.0.1:1/0")  # overridden by --url
    env["RUSHPY_REDIS_PASSWORD"] = PASSWORD  # no password on the command line
    args = ["--network", network_id, "--fun", "tests.funcs:square", "--worker-id", "tls-cli"]
    if style == "url query":
        args += ["--url", config.to_url(include_options=True)]
    else:
        plain = tls.config(ssl_ca_certs=None, ssl_certfile=None, ssl_keyfile=None)
        args += ["--url", plain.to_url(include_options=True), "--ssl-ca-certs", str(tls.ca)]
        args += ["--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key), "--ssl-check-hostname"]
    process = subprocess.Popen(
        [sys.executable, "-m", "rushpy.worker", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        async with Controller(network_id, config=config) as rush:
            keys = await rush.push_tasks([{"x": 7}])
            table = await rush.wait_for_tasks(keys, timeout=60)
            assert (table[0]["y"], table[0]["worker_id"]) == (49, "tls-cli")
            process.send_signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(process.wait, 30) == 0
            await rush.reset(workers=True)
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate(timeout=30)
    assert "Traceback" not in stderr


# -- failures say what to fix ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ssl_ca_certs": "other"}, "certificate was not accepted: set ssl_ca_certs"),
        ({"host": "127.0.0.1"}, "mismatch.*ssl_check_hostname=false"),
        ({"ssl_certfile": None, "ssl_keyfile": None}, "set ssl_certfile and ssl_keyfile"),
        ({"ssl_ca_certs": "/no/such/ca.pem"}, r"no such file: ssl_ca_certs='/no/such/ca.pem'"),
    ],
)
async def test_tls_failures_are_connection_errors_naming_the_fix(
    tls: TLSServer, network_id: str, changes: dict[str, object], message: str
) -> None:
    if changes.get("ssl_ca_certs") == "other":
        changes = {"ssl_ca_certs": str(tls.other_ca)}
    with pytest.raises(rushpy.ConnectionFailedError, match=message) as caught:
        async with Controller(network_id, config=tls.config(**changes)):
            pass
    assert "no TLS connection to Redis at rediss://" in str(caught.value)
    assert PASSWORD not in str(caught.value)


async def test_hostname_and_certificate_checks_can_be_relaxed(tls: TLSServer, network_id: str) -> None:
    # The certificate names localhost, not 127.0.0.1: accepted once the name check is off.
    for config in (
        tls.config(host="127.0.0.1", ssl_check_hostname=False),
        tls.config(host="127.0.0.1", ssl_ca_certs=None, ssl_cert_reqs="none"),  # encryption only
        tls.config(ssl_cert_reqs="optional"),
    ):
        async with Controller(network_id, config=config) as rush:
            assert await rush.n_tasks() == 0


def test_cli_worker_with_the_wrong_ca_exits_2_naming_the_fix(tls: TLSServer, network_id: str) -> None:
    env = worker_env(tls.config(ssl_ca_certs=str(tls.other_ca)).to_url(include_options=True))
    env["RUSHPY_REDIS_PASSWORD"] = PASSWORD
    done = subprocess.run(
        [sys.executable, "-m", "rushpy.worker", "--network", network_id, "--fun", "tests.funcs:square"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "certificate was not accepted" in done.stderr and "Traceback" not in done.stderr


async def test_status_command_takes_tls_flags(
    tls: TLSServer, network_id: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Controller(network_id, config=tls.config()) as rush:
        await rush.push_tasks([{"x": 1}])  # the network exists
    monkeypatch.setenv("RUSHPY_REDIS_PASSWORD", PASSWORD)
    url = tls.config(ssl_ca_certs=None, ssl_certfile=None, ssl_keyfile=None).to_url(include_options=True)
    flags = ["--ssl-ca-certs", str(tls.ca), "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key)]
    status = ["status", network_id, "--url", url]
    assert await anyio.to_thread.run_sync(rushpy_main, [*status, *flags]) == 0
    assert "finished" in capsys.readouterr().out
    # Without the client certificate the server refuses: one line, exit 2.
    assert await anyio.to_thread.run_sync(rushpy_main, [*status, "--ssl-ca-certs", str(tls.ca)]) == 2
    assert "ssl_certfile" in capsys.readouterr().err


def test_tls_settings_travel_in_the_url() -> None:
    config = RedisConfig(
        scheme="rediss",
        ssl_ca_certs="/etc/ssl/my ca.pem",
        ssl_certfile="/c&d.pem",
        ssl_keyfile="/k=1.pem",
        ssl_cert_reqs="optional",
        ssl_check_hostname=False,
    )
    url = config.to_url(include_options=True)
    assert "my%20ca.pem" in url and "ssl_check_hostname=False" in url
    assert RedisConfig.from_url(url) == config
    # Defaults stay out of the URL.
    assert RedisConfig(scheme="rediss").to_url(include_options=True) == "rediss://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ssl_ca_certs": "/ca.pem"}, "ssl_ca_certs set but the scheme is 'redis'.*rediss://"),
        ({"scheme": "rediss", "ssl_keyfile": "/k.pem"}, "ssl_keyfile needs ssl_certfile"),
        ({"scheme": "rediss", "ssl_cert_reqs": "maybe"}, "ssl_cert_reqs"),
        ({"scheme": "rediss", "ssl_check_hostname": "perhaps"}, "ssl_check_hostname"),
    ],
)
def test_bad_tls_settings_are_config_errors(fields: dict[str, object], message: str) -> None:
    with pytest.raises(rushpy.ConfigError, match=message):
        RedisConfig(**fields)  # type: ignore[arg-type]


# -- a least-privilege user over TLS -----------------------------------------------------------------
async def test_a_user_limited_to_one_network_runs_its_life_cycle_over_tls(
    tls: TLSServer, network_id: str
) -> None:
    """ACL and TLS together: the rules of ``rushpy acl`` and a client certificate, nothing refused."""
    user, password = f"u-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin = create_client(tls.config())  # the default user, over TLS too
    try:
        await admin.execute_command(*acl_setuser(user, network_id, password=password).split())
        await admin.execute_command("ACL", "LOG", "RESET")
        config = tls.config(username=user, password=password, reconnect_budget=10)
        seen = await run_life_cycle(config, network_id)
        refused = {entry["object"] for entry in await admin.acl_log()}
        await admin.execute_command("ACL", "DELUSER", user)
    finally:
        await admin.aclose()
    assert refused <= {"config|get"}  # the eviction-policy check, skipped for this user
    assert seen["finished_later"] == [0, 2, 4, 6, 8, 20, 22, 24] and seen["after_reset"] == 0
