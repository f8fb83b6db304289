"""A RabbitMQ node and a PostgreSQL cluster of the test session's own, for tests that restart or stop them.

The machine's broker (5672) and database (5432) are shared by everyone working on it: no test may stop them. These
servers run beside them on free ports, under unique names and in temporary directories, so several sessions can each
start their own at the same time. Both are started on first use (a RabbitMQ node takes ~5-20 s) and removed at the
end of the session. Their methods block: call them from async tests with `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
RABBITMQ_HOME = "/var/lib/rabbitmq"  # where the rabbitmq user's Erlang cookie lives (the CLI tools need it)


def free_port() -> int:
    """A TCP port nobody listens on right now on 127.0.0.1 (the caller retries if another process takes it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.fail(f"starting a private {what} needs root (it runs as the {what}'s own system user)")


def _owned_tempdir(prefix: str, user: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    shutil.chown(path, user, user)
    path.chmod(0o755)
    return path


class PrivateRabbitMQ:
    """A RabbitMQ node with its own config, node name, ports, data and log directories, and no plugins (but the
    management API on a port of its own, and the shovel plugin, when asked: `management_url`)."""

    def __init__(self, *, management: bool = False) -> None:
        _need_root("RabbitMQ")
        if not (RABBITMQ_BIN / "rabbitmq-server").exists():
            pytest.fail("RabbitMQ is not installed here (run `make services`)")
        self.node = f"obsflow-test-{uuid.uuid4().hex[:10]}@localhost"
        self.directory = _owned_tempdir("obsflow-rabbitmq-", "rabbitmq")
        # No plugin by default: the main node's plugins hold their ports. The shovel plugin listens on nothing; it comes
        # with the management API, which Kubernetes sites set shovels up through.
        plugins = "[rabbitmq_management,rabbitmq_shovel]." if management else "[]."
        (self.directory / "enabled_plugins").write_text(plugins + "\n")
        shutil.chown(self.directory / "enabled_plugins", "rabbitmq", "rabbitmq")
        self._management = management
        self.management_port = 0
        self.port = 0
        self._dist_port = 0
        self._server: subprocess.Popen[bytes] | None = None

    @property
    def management_url(self) -> str:
        """The management HTTP API's base URL (guest is allowed from the loopback interface)."""
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def amqp_url(self) -> str:
        """The URL clients connect with (guest is allowed from the loopback interface)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self) -> None:
        """Start the node and wait until it accepts connections; the first start picks its ports (a restart keeps
        them, so that clients reconnect to the same address)."""
        for _attempt in range(3):
            first = self.port == 0
            if first:
                self.port, self._dist_port = free_port(), free_port()
                self.management_port = free_port() if self._management else 0
            config = f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            if self._management:
                config += f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
            (self.directory / "rabbitmq.conf").write_text(config)
            (self.directory / "pid").unlink(missing_ok=True)  # `rabbitmqctl wait` must not read the last run's
            log = (self.directory / "server.log").open("ab")
            self._server = subprocess.Popen(
                ["runuser", "-u", "rabbitmq", "--", str(RABBITMQ_BIN / "rabbitmq-server")],
                env={**os.environ, **self._environment()}, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.directory, start_new_session=True,
            )
            log.close()
            if self._ctl("wait", str(self.directory / "pid"), "--timeout", "180", check=False).returncode == 0:
                return
            self._ctl("stop", str(self.directory / "pid"), check=False)
            self._server.wait(timeout=60)
            self._server = None
            log_text = (self.directory / "server.log").read_text(errors="replace")
            if not (first and "eaddrinuse" in log_text):
                raise RuntimeError(f"the private RabbitMQ node did not start:\n{log_text[-3000:]}")
            self.port = 0  # a port taken by someone else between the choice and the start: choose again
        raise RuntimeError("the private RabbitMQ node found no free ports in three tries")

    def stop(self) -> None:
        """Stop the node (clients see their connections closed, CONNECTION_FORCED) and wait for its process."""
        if self._server is None:
            return
        self._ctl("stop", str(self.directory / "pid"))
        self._server.wait(timeout=60)
        self._server = None

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the node, stay down `down_s` seconds (an outage that lasts), start it again on the same port."""
        self.stop()
        time.sleep(down_s)  # the outage itself: this is what the caller asks for, not a wait for a condition
        self.start()

    def close(self) -> None:
        """Stop the node and remove its directory."""
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _environment(self) -> dict[str, str]:
        d = self.directory
        return {
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self._dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(d / "pid"),
            "HOME": RABBITMQ_HOME,
        }

    def _ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["runuser", "-u", "rabbitmq", "--", "env", f"HOME={RABBITMQ_HOME}", str(RABBITMQ_BIN / "rabbitmqctl"),
             "-n", self.node, *args],
            capture_output=True, timeout=240, check=check,
        )


class PrivatePostgres:
    """A PostgreSQL cluster made with initdb in a temporary directory, on its own port and socket directory."""

    def __init__(self) -> None:
        _need_root("PostgreSQL")
        self.bin = _postgres_bin()
        self.directory = _owned_tempdir("obsflow-postgres-", "postgres")
        self._as_postgres(self.bin / "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                          "--no-sync")
        self.port = 0

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def database_url(self) -> str:
        """The URL clients connect with."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start the cluster and wait until it accepts connections; the first start picks its port."""
        for _attempt in range(3):
            first = self.port == 0
            if first:
                self.port = free_port()
            options = (f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
                       " -c max_connections=200")
            started = self._as_postgres(self.bin / "pg_ctl", "-D", str(self.data), "-l", str(self.directory / "log"),
                                        "-o", options, "-w", "-t", "120", "start", check=False)
            if started.returncode == 0:
                return
            log_text = (self.directory / "log").read_text(errors="replace")
            if not (first and "could not bind" in log_text):
                raise RuntimeError(f"the private PostgreSQL did not start:\n{log_text[-3000:]}")
            self.port = 0  # a port taken by someone else between the choice and the start: choose again
        raise RuntimeError("the private PostgreSQL found no free port in three tries")

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster: `fast` terminates sessions, as in an administrator's restart; `immediate` aborts every
        process at once, as in a crash (the next start recovers from the WAL)."""
        self._as_postgres(self.bin / "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, down_s: float = 0.0, mode: str = "fast") -> None:
        """Stop the cluster (`mode` as in `stop`), stay down `down_s` seconds, start it again on the same port."""
        self.stop(mode)
        time.sleep(down_s)  # the outage itself, as asked for
        self.start()

    def close(self) -> None:
        """Stop the cluster and remove its directory."""
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _as_postgres(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["runuser", "-u", "postgres", "--", *map(str, args)], capture_output=True,
                              timeout=180, check=check, cwd=self.directory)


def _postgres_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        pytest.fail("PostgreSQL's initdb is not installed here (run `make services`)")
    return versions[-1].parent


@pytest.fixture(scope="session")
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    """A RabbitMQ node of this session's own: tests may stop and restart it."""
    broker = PrivateRabbitMQ()
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of this session's own: tests may stop and restart it."""
    database = PrivatePostgres()
    try:
        database.start()
        yield database
    finally:
        database.close()
