"""Reading runs back, and attaching a folder to a run: what a report needs from MLflow.

Plain values in and out (tracking URIs, run ids, paths, dicts of strings). Reads never create a
store: a SQLite URI whose file does not exist finds no run, instead of leaving an empty
``mlflow.db`` behind wherever the reader happened to be started.
"""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

# MLflow draws a progress bar on stderr for every download unless this is "false"; it reads the
# switch from the environment alone (no argument carries it), so a program that downloads quietly
# sets it once for its process before it downloads (``python -m study report`` does)
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def _client(uri: str) -> MlflowClient | None:
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None
    return MlflowClient(tracking_uri=uri)


def run_tags(uri: str, run_id: str) -> dict[str, str] | None:
    """The tags of run ``run_id`` in the store at ``uri``; None when the store has no such run."""
    client = _client(uri)
    if client is None:
        return None
    try:
        return dict(client.get_run(run_id).data.tags)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def download(uri: str, run_id: str, path: str, dst: str | Path) -> list[Path]:
    """Copy the artefact folder ``path`` of a run into ``dst``; the local files, none when the
    run has no such folder (or no files in it). MLflow shows its progress bar unless
    ``PROGRESS_BAR`` is "false" in the environment."""
    client = _client(uri)
    if client is None or not client.list_artifacts(run_id, path):
        return []
    local = Path(client.download_artifacts(run_id, path, str(dst)))
    return sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]


def log_folder(uri: str, run_id: str, folder: str | Path, artifact_path: str) -> None:
    """Log every file below ``folder`` to the run, under ``artifact_path``."""
    MlflowClient(tracking_uri=uri).log_artifacts(run_id, str(folder), artifact_path)
