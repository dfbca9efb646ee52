"""Throw-away servers for tests: a PostgreSQL cluster and an MLflow tracking server, both bound to
127.0.0.1, both with a stop and a start so tests can take them away mid-study. What a test needs
but cannot have here (a server, a browser) skips it, except in CI, where it fails it."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import NoReturn

import pytest

from tracking.ui import port_free, server_command

USER = "optuna"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    """Whether the MLflow server ``proc`` answers ``url``/health before it exits or ``timeout``
    seconds pass."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)  # the server gives no other sign of being up than answering
    return False


def in_ci() -> bool:
    """Whether $CI says this is a CI run (CI services set CI=true; so does .ci/run)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip the test that needs what ``reason`` says is missing; in CI fail it instead, so that
    CI cannot pass by skipping the tests of PostgreSQL or the browser."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: this test must run, not skip)", pytrace=False)
    pytest.skip(reason)


class ServerUnavailable(RuntimeError):
    """The server cannot be started here (not installed, no user to run it as)."""


class Postgres:
    """A PostgreSQL cluster in a temporary folder, password authentication only (the password is
    random; clients get it from $PGPASSWORD). As root it runs as the ``postgres`` user, which
    the server requires."""

    def __init__(self):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise ServerUnavailable(
                "PostgreSQL server binaries not found "
                "(/usr/lib/postgresql/*/bin; apt-get install postgresql)"
            )
        self.bin = Path(bins[-1]).parent
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user and shutil.which("runuser") is None:
            raise ServerUnavailable("running as root without runuser to switch to postgres")
        self.folder = Path(tempfile.mkdtemp(prefix="sae-pg-"))  # /tmp: postgres can enter it
        self.password = secrets.token_urlsafe(16)
        self.port = free_port()
        (self.folder / "pw").write_text(self.password + "\n")
        if self.user:
            shutil.chown(self.folder, self.user)
            shutil.chown(self.folder / "pw", self.user)
        self._run(
            "initdb",
            "-D",
            self.folder / "data",
            "-U",
            USER,
            "-A",
            "scram-sha-256",
            f"--pwfile={self.folder / 'pw'}",
        )
        (self.folder / "pw").unlink()
        self.start()

    def _run(self, tool: str, *args) -> None:
        cmd = [str(self.bin / tool), *map(str, args)]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, cwd=self.folder, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise ServerUnavailable(f"{tool} failed: {(done.stderr or done.stdout)[-500:]}")

    def start(self) -> None:
        self._run(
            "pg_ctl",
            "-D",
            self.folder / "data",
            "-l",
            self.folder / "log",
            "-w",
            "-t",
            "120",
            "-o",
            f"-k {self.folder} -p {self.port} -c listen_addresses=127.0.0.1",
            "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", self.folder / "data", "-m", "fast", "-w", "stop")

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=USER, password=self.password, dbname="postgres"
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def close(self) -> None:
        with contextlib.suppress(ServerUnavailable, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class MlflowServer:
    """``mlflow server`` on a backend store URI with an artefact root, on 127.0.0.1, started
    through the project's launcher command; its output goes to ``log``."""

    def __init__(self, backend_uri: str, artifacts: Path, env: dict[str, str], log: Path):
        self.backend_uri, self.artifacts, self.log = backend_uri, artifacts, log
        # no GenAI job runners (eight processes): a training study has no use for them
        self.env = env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self, timeout: float = 180) -> None:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                server_command(self.backend_uri, "127.0.0.1", self.port, self.artifacts),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        if not answers(self.url, self.proc, timeout):
            raise RuntimeError(f"mlflow server did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        deadline = time.monotonic() + 60
        while (
            _group_alive(self.proc.pid) or not port_free("127.0.0.1", self.port)
        ) and time.monotonic() < deadline:
            time.sleep(0.2)  # its uvicorn process ends, and lets go of the port, a moment later
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
