"""Where runs are kept: the tracking URI, its password masked, a check that the store can work,
and the errors a store raises. Light (no MLflow import), so command lines can check their input
and print their help without loading MLflow."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_URI = "sqlite:///mlflow.db"  # MLflow 3's own default: one file in the working directory


def mask(url: str) -> str:
    """The URL with any password replaced by ***, for tags, logs and reports."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class TrackingError(ValueError):
    """A tracking store that cannot be used: a server that does not answer, a missing folder."""


class TrackingFailed(RuntimeError):
    """A tracking store that failed while in use (it errors, it is full, it went read-only)."""


def check_store(uri: str) -> None:
    """Refuse, in one line, a tracking store that cannot work, before anything is written
    anywhere: an HTTP server that does not answer (MLflow's own client would retry it for
    minutes), a SQLite file in a folder that does not exist."""
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10).close()
        except urllib.error.HTTPError:
            return  # it answers (perhaps asking for credentials): a server is there
        except (OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise TrackingError(
                f"MLflow tracking server {mask(uri)} does not answer "
                f"({str(reason).splitlines()[0][:200]})"
            ) from err
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise TrackingError(f"tracking store {uri}: folder {folder} does not exist")


def write_ahead(uri: str) -> None:
    """Put a SQLite store in write-ahead-log mode (kept by the file; no-op for other stores).
    In SQLite's default mode every commit syncs the journal and the database to disk, and
    MLflow commits several times per write: a study's trial waited 0.4 s for the disk, against
    0.2 s of CPU. In WAL mode a commit appends to one log, synced as before (nothing is less
    durable), and readers (the UI) do not block the writer."""
    if not uri.startswith("sqlite:///"):
        return
    path = uri.removeprefix("sqlite:///").split("?")[0]
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        db.execute("PRAGMA journal_mode=WAL")


def tracking_uri(override: str | None = None) -> str:
    """``override``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` (absolute)."""
    uri = override or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    return _absolute_sqlite(uri)


def _absolute_sqlite(uri: str) -> str:
    # a relative sqlite path would follow the working directory of whoever opens it (the UI)
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri
