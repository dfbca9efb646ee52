"""Where studies persist.

Default: an Optuna journal file, ``journal:studies/optuna-journal.log``. Optuna's FAQ advises
against SQLite with several writers (worker processes lock each other out); a journal file is
append-only with file locks, safe for several processes on one machine. Across machines, pass a
PostgreSQL or MySQL URL (``postgresql+psycopg2://user@host/db``): RDB storages also get
heartbeats, so trials of a dead worker are failed and retried by another worker.

Credentials come from the environment: libpq's ``PGPASSWORD`` or ``~/.pgpass``, or a reference
``${NAME}`` in the URL, replaced by that environment variable only when the storage is opened. A
password written into the URL works too; it is masked wherever the URL is shown and handed to
helper processes through their environment, not their command line.

Each process opens its storage through ``open_storage``, which labels every trial the process
starts with its ``host:pid:start`` in the same write that starts the trial (study/workers.py uses
the label to find trials of dead workers) and, on a database, rides out the database going away:
a call that loses its connection is repeated with backoff for up to ``RECONNECT_SECONDS``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from study.workers import WORKER_ATTR, Retry, worker_id
from tracking.store import mask

_log = logging.getLogger(__name__)  # unconfigured, warnings still reach stderr

DEFAULT_STORAGE = "journal:studies/optuna-journal.log"
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
HEARTBEAT_SECONDS = 30  # RDB only: a trial silent for 4 beats belongs to a dead worker
RECONNECT_SECONDS = 120  # a database away longer than this stops the worker
PASSWORD_ENV = "SAE_STORAGE_PASSWORD"  # how helper processes receive an inline password
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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
        raise StorageError(
            f"storage {mask(url)!r} is neither journal:PATH nor a database URL "
            f"({', '.join(s + '://...' for s in RDB_SCHEMES)})"
        )
    if scheme == "sqlite":
        path = url.split(":///", 1)[-1]
        if not path or not Path(path).parent.is_dir():
            raise StorageError(f"storage {url!r}: folder {Path(path).parent} does not exist")
    expand(url)


def check_workers(url: str, workers: int) -> None:
    """Refuse several worker processes on a storage that is not safe for parallel writers."""
    if workers > 1 and url.startswith("sqlite"):
        raise StorageError(
            f"--workers {workers} needs a storage safe for parallel writers "
            f"(journal:PATH, or a PostgreSQL or MySQL URL), not SQLite"
        )


def expand(url: str) -> str:
    """``url`` with each ``${NAME}`` replaced by the environment variable NAME."""
    unset = [name for name in _REFERENCE.findall(url) if name not in os.environ]
    if unset:
        raise StorageError(f"storage {mask(url)!r} refers to ${{{unset[0]}}}, which is not set")
    return _REFERENCE.sub(lambda m: os.environ[m.group(1)], url)


def for_helpers(url: str) -> tuple[str, dict[str, str]]:
    """The URL for a helper process's command line, where any process listing shows it, and
    the environment it needs: an inline password moves into $SAE_STORAGE_PASSWORD."""
    password = urlsplit(url).password
    if password is None or _REFERENCE.fullmatch(password):
        return url, {}
    return mask(url).replace(":***@", f":${{{PASSWORD_ENV}}}@", 1), {PASSWORD_ENV: password}


def open_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS) -> BaseStorage:
    """The storage behind ``url`` (``journal:PATH`` or an RDB URL), created if new, wrapped so
    that trials are labelled with their worker. A database that cannot be reached now is an
    error at once; one that goes away later is waited for."""
    check_url(url)
    real = expand(url)
    try:
        if url.startswith("journal:"):
            path = Path(real.removeprefix("journal:"))
            path.parent.mkdir(parents=True, exist_ok=True)
            return cast(BaseStorage, WorkerStorage(JournalStorage(JournalFileBackend(str(path)))))
        rdb = RDBStorage(
            real,
            engine_kwargs={"pool_pre_ping": True},
            heartbeat_interval=heartbeat,
            grace_period=4 * heartbeat,
            heartbeat_stale_trial_callback=Retry(),
        )
        return cast(
            BaseStorage, WorkerStorage(optuna.storages.get_storage(rdb), patience=RECONNECT_SECONDS)
        )
    except Exception as err:  # sqlalchemy and OS errors of every kind: one line for the user
        reason = _reason(err)
        password = urlsplit(real).password
        if password:
            reason = reason.replace(password, "***")
        raise StorageError(f"cannot open storage {mask(url)!r}: {reason[:300]}") from err


def _reason(err: BaseException) -> str:
    """The first line of what went wrong, the driver's own words where SQLAlchemy wraps them."""
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _disconnected(err: BaseException | None) -> bool:
    """Whether ``err`` says the database connection is gone (then the call may be repeated):
    anywhere in its chain of causes, a lost connection, or a session left unusable by one
    (PendingRollbackError: Optuna's fallback read after a failed one meets it)."""
    if "sqlalchemy.exc" not in sys.modules:  # no database in use (a journal file): nothing
        return False  # of it can have failed, and importing it costs 0.15 s
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, PendingRollbackError

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (OperationalError, InterfaceError, PendingRollbackError)) or (
            isinstance(err, DBAPIError) and err.connection_invalidated
        ):
            return True
        err = err.__cause__ or err.__context__
    return False


class WorkerStorage(BaseHeartbeat):
    """An Optuna storage as one worker process uses it: every trial the worker starts is
    labelled with its ``host:pid:start`` as it starts (created with the label, or labelled as
    soon as it is taken from the queue), and with ``patience`` every call that loses the database
    connection is repeated with exponential backoff until the database is back or ``patience``
    seconds have passed. Every other method of the wrapped storage is passed through.

    Repeating a write is harmless but for a trial creation whose commit arrived while its reply
    was lost: that leaves a spare RUNNING trial labelled with this worker, failed once the
    worker has ended."""

    def __init__(self, inner: BaseStorage, patience: float = 0.0):
        self.inner, self.patience = inner, patience

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "inner":  # copy and pickle probes; unpickling
            raise AttributeError(name)
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: self._retry(lambda: attr(*args, **kwargs))

    def _retry(self, call: Callable[[], Any], committed: Callable[[], bool] | None = None) -> Any:
        deadline, pause, lost = time.monotonic() + self.patience, 0.5, False
        while True:
            try:
                return call()
            except UpdateFinishedTrialError:
                if lost and committed is not None and committed():
                    return True  # the attempt that lost its connection had made this change
                raise
            except Exception as err:
                if not (_disconnected(err) and time.monotonic() + pause < deadline):
                    raise
                if not lost:
                    _log.warning(
                        "storage connection lost (%s); retrying for up to %.0f s",
                        _reason(err.__cause__ or err)[:200],
                        self.patience,
                    )
            lost = True
            time.sleep(pause)  # the database is away: nothing to wait on but time
            pause = min(2 * pause, 10.0)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is None:
            template_trial = optuna.trial.create_trial(
                state=TrialState.RUNNING, user_attrs={WORKER_ATTR: worker_id()}
            )
        return self._retry(lambda: self.inner.create_new_trial(study_id, template_trial))

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        changed = self._retry(
            lambda: self.inner.set_trial_state_values(trial_id, state, values),
            committed=lambda: self.inner.get_trial(trial_id).state == state,
        )
        if changed and state == TrialState.RUNNING:  # taken from the queue by this worker
            self._retry(lambda: self.inner.set_trial_user_attr(trial_id, WORKER_ATTR, worker_id()))
        return changed

    # heartbeats: the database's; none on a journal
    def get_heartbeat_interval(self) -> int | None:
        return (
            self.inner.get_heartbeat_interval() if isinstance(self.inner, BaseHeartbeat) else None
        )

    def get_heartbeat_stale_trial_callback(self):
        return (
            self.inner.get_heartbeat_stale_trial_callback()
            if isinstance(self.inner, BaseHeartbeat)
            else None
        )

    def record_heartbeat(self, trial_id: int) -> None:
        inner = cast(BaseHeartbeat, self.inner)  # only the database's heartbeats are asked
        self._retry(lambda: inner.record_heartbeat(trial_id))

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        inner = cast(RDBStorage, self.inner)  # Optuna asks only a storage with heartbeats
        return self._retry(lambda: inner._get_stale_trial_ids(study_id))
