"""Where studies persist.

Default: an Optuna journal file, ``journal:studies/optuna-journal.log``. Optuna's FAQ advises
against SQLite with several writers (worker processes lock each other out); a journal file is
append-only with file locks, safe for several processes on one machine. Across machines, pass a
PostgreSQL or MySQL URL (``postgresql+psycopg2://user:pw@host/db``): RDB storages also get
heartbeats, so trials of a dead worker are failed by whoever opens the study next.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

DEFAULT_STORAGE = "journal:studies/optuna-journal.log"
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
HEARTBEAT_SECONDS = 30  # RDB only: a trial silent for 4 beats belongs to a dead worker


class StorageError(ValueError):
    """A storage URL that is malformed or cannot be opened; the CLI exits 2."""


def check_url(url: str) -> None:
    """Refuse a malformed URL before anything is created."""
    if url.startswith("journal:"):
        if not url.removeprefix("journal:"):
            raise StorageError("journal storage needs a path: journal:PATH")
        return
    scheme = urlsplit(url).scheme.split("+")[0]
    if scheme not in RDB_SCHEMES:
        raise StorageError(f"storage {mask(url)!r} is neither journal:PATH nor a database URL "
                           f"({', '.join(s + '://...' for s in RDB_SCHEMES)})")
    if scheme == "sqlite":
        path = url.split(":///", 1)[-1]
        if not path or not Path(path).parent.is_dir():
            raise StorageError(f"storage {url!r}: folder {Path(path).parent} does not exist")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The storage behind ``url`` (``journal:PATH`` or an RDB URL), created if new."""
    check_url(url)
    try:
        if url.startswith("journal:"):
            path = Path(url.removeprefix("journal:"))
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        return RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS,
                          grace_period=4 * HEARTBEAT_SECONDS)
    except Exception as err:  # sqlalchemy and OS errors of every kind: one line for the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StorageError(f"cannot open storage {mask(url)!r}: {first[:300]}") from err


def mask(url: str) -> str:
    """The URL with any password replaced by ***, for tags, logs and reports."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def worker_id() -> str:
    """host:pid of this process, stored on each trial so a later run can tell if it died."""
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_alive(worker: str) -> bool | None:
    """True/False for a worker on this host, None when it ran elsewhere (cannot tell)."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
