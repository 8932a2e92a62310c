"""A throwaway PostgreSQL cluster for tests: initdb into a temp folder, pg_ctl start.

The cluster listens on 127.0.0.1 on a free port (and on a unix socket inside its own
folder), with trust authentication for the ``postgres`` user, and is removed at the end
of the session. When the tests run as root, initdb and pg_ctl run as the ``postgres``
user (``runuser -u postgres --``): PostgreSQL refuses to run as root.

If PostgreSQL cannot start, the fixture FAILS (``pytest.fail``), it never skips: the
PostgreSQL tests are part of the suite, not an option.

Use::

    from tests.pg_harness import PgCluster, pg_cluster_fixture  # noqa: F401 (fixture "pg_cluster")

    def test_x(pg_cluster):
        url = pg_cluster.new_database()   # postgresql+psycopg://postgres@127.0.0.1:PORT/test_N
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest


def _find_pg_bin() -> Path:
    """``$WAVESIGN_PG_BIN``, or the newest ``/usr/lib/postgresql/<major>/bin`` installed."""
    override = os.environ.get("WAVESIGN_PG_BIN")
    if override:
        return Path(override)
    found = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    if not found:
        # Named in the failure message of the fixture: initdb will not be found there.
        return Path("/usr/lib/postgresql/<none installed>/bin")
    return max(found, key=lambda p: int(p.parent.name))


PG_BIN = _find_pg_bin()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """One running cluster; ``new_database()`` hands out a fresh database per test."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="wavesign-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log = self.root / "postgres.log"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        self._counter = itertools.count(1)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)

    def start(self) -> None:
        self.socket_dir.mkdir()
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        init = self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.socket_dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        start = self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        if start.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {start.stderr.strip()} {log[-2000:]}")

    def stop(self) -> None:
        if self.data.exists():
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def admin_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """CREATE DATABASE test_N and return its SQLAlchemy URL."""
        name = f"test_{next(self._counter)}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session", name="pg_cluster")
def pg_cluster_fixture() -> Iterator[PgCluster]:
    """A running PostgreSQL cluster for the whole session; fails if it cannot start."""
    cluster = PgCluster()
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        cluster.stop()
        pytest.fail(f"PostgreSQL could not start (needed, never skipped): {exc}")
    try:
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop()
