"""MLflow runs from plain values: params, metric dicts, matplotlib figures, images, files.

Everything goes through an explicit ``MlflowClient`` and run id, never MLflow's fluent
"active run" state, so several runs can be logged from several threads at once and nothing
is shared between them. Nested runs (a study's trials) carry MLflow's ``mlflow.parentRunId`` tag.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_TAGS_PER_BATCH,
)

from tracking.store import tracking_uri, write_ahead

PARENT_TAG = "mlflow.parentRunId"
STATUSES = ("FINISHED", "FAILED", "KILLED")
# run tag: "false" while what the run should hold is not all written, "true" once it is
RECORDED = "recorded"


def has_run(uri: str, run_id: str) -> bool:
    """Whether the tracking store at ``uri`` holds run ``run_id``. It only reads: a SQLite store
    that does not exist is not created."""
    uri = tracking_uri(uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return False
    try:
        MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def _artifact_location(uri: str, experiment: str) -> str | None:
    # MLflow puts a SQLite store's artefacts under ./mlruns of the current directory; keep them
    # beside the database instead, so the store is one folder wherever it is opened from
    if not uri.startswith("sqlite:///"):
        return None  # a tracking server knows its own artefact root
    root = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    return (root / re.sub(r"[^A-Za-z0-9._-]+", "_", experiment)).as_uri()


def git_commit(cwd: str | Path | None = None) -> str:
    """The current commit (with ``-dirty`` if the tree has changes), or ``unknown``."""
    try:

        def git(*args: str) -> str:
            return subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()

        commit = git("rev-parse", "--short=12", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    """One MLflow experiment in one tracking store."""

    def __init__(self, experiment: str, uri: str | None = None):
        self.uri = tracking_uri(uri)
        write_ahead(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
            return
        try:
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=_artifact_location(self.uri, experiment)
            )
        except MlflowException:
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                raise
            self.experiment_id = found.experiment_id  # a worker elsewhere created it meanwhile

    def run(self, run_id: str) -> Run:
        """An existing run of this store, to log more to it or end it."""
        return Run(self.client, run_id)

    def running_runs(self) -> dict[str, dict[str, str]]:
        """This experiment's runs whose status is still RUNNING: their tags by run id."""
        return self._search("attributes.status = 'RUNNING'")

    def tagged(self, key: str, value: str) -> dict[str, dict[str, str]]:
        """This experiment's runs with tag ``key`` = ``value``: their tags by run id."""
        return self._search(f"tags.{key} = '{value}'")

    def _search(self, condition: str) -> dict[str, dict[str, str]]:
        runs = self.client.search_runs([self.experiment_id], condition, max_results=50000)
        return {r.info.run_id: dict(r.data.tags) for r in runs}

    def start_run(
        self,
        name: str,
        params: Mapping[str, object] | None = None,
        tags: Mapping[str, object] | None = None,
        parent: Run | None = None,
    ) -> Run:
        """Create a run (nested under ``parent`` if given) with its params and tags."""
        all_tags = {k: str(v) for k, v in (tags or {}).items()}
        if parent is not None:
            all_tags[PARENT_TAG] = parent.run_id
        info = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags).info
        run = Run(self.client, info.run_id)
        if params:
            run.log_params(params)
        return run


@dataclass(frozen=True)
class Stored:
    """What a run holds: its status, each metric's latest value, its tags, its artefact files
    (path: size in bytes)."""

    status: str
    metrics: dict[str, float]
    tags: dict[str, str]
    artifacts: dict[str, int]


class Run:
    """One MLflow run; a context manager that marks it FAILED if the block raises."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id

    def log_params(self, params: Mapping[str, object]) -> None:
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, object]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Log numbers at ``step``; NaN and inf are kept, so a diverging run shows where."""
        self.log_metric_steps([(metrics, step)])

    def log_metric_steps(
        self,
        entries: list[tuple[dict[str, float], int]],
        tags: Mapping[str, object] | None = None,
        params: Mapping[str, object] | None = None,
    ) -> None:
        """Log several steps' metrics ``[(metrics, step), ...]``, with ``tags`` and ``params``,
        in as few writes as possible: MLflow's SQL store pays about as much for each write as
        for 60 values in it."""
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), now, step) for values, step in entries for k, v in values.items()
        ]
        others = [
            *(Param(k, str(v)) for k, v in (params or {}).items()),
            *(RunTag(k, str(v)) for k, v in (tags or {}).items()),
        ]
        if len(others) > MAX_PARAMS_TAGS_PER_BATCH:  # a batch holds 100 params and tags at most
            if params:
                self.log_params(params)
            if tags:
                self.set_tags(tags)
            others = []
        room = min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - len(others))
        chunks = [metrics[i : i + room] for i in range(0, len(metrics), room)] or [[]]
        for chunk in chunks[:-1]:
            self.client.log_batch(self.run_id, metrics=chunk)
        if chunks[-1] or others:
            self.client.log_batch(
                self.run_id,
                metrics=chunks[-1],
                params=[p for p in others if isinstance(p, Param)],
                tags=[t for t in others if isinstance(t, RunTag)],
            )

    def log_figure(self, figure, path: str) -> None:
        """Save a matplotlib figure as a PNG artefact at ``path`` (e.g. ``figures/x.png``)."""
        self.client.log_figure(self.run_id, figure, path)

    def log_figures(self, sketches: Mapping, folder: str = "figures") -> None:
        """Draw each sketch (a call returning a matplotlib figure) and save it as
        ``folder/<name>.png``."""
        for name, make in sketches.items():
            self.log_figure(make(), f"{folder}/{name}.png")

    def log_images(self, pictures: Mapping, folder: str = "figures") -> None:
        """Make each picture (a call returning a uint8 array, (h, w) or (h, w, 3)) and save
        it as ``folder/<name>.png``, all in one write. PNG's fastest compression: a third of
        the default's CPU time for these flat pictures, files a little larger."""
        from PIL import Image

        with tempfile.TemporaryDirectory() as tmp:
            for name, make in pictures.items():
                Image.fromarray(make()).save(Path(tmp, f"{name}.png"), compress_level=1)
            self.client.log_artifacts(self.run_id, tmp, folder)

    def log_dict(self, data: dict, path: str) -> None:
        self.client.log_dict(self.run_id, data, path)

    def log_text(self, text: str, path: str) -> None:
        self.client.log_text(self.run_id, text, path)

    def log_file(self, local_path: str | Path, artifact_dir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(local_path), artifact_dir)

    def stored(self) -> Stored:
        """What the run holds now, as its store gives it back."""
        run = self.client.get_run(self.run_id)
        return Stored(run.info.status, dict(run.data.metrics), dict(run.data.tags), self._files())

    def _files(self, folder: str | None = None) -> dict[str, int]:
        files: dict[str, int] = {}
        for f in self.client.list_artifacts(self.run_id, folder):
            files.update(self._files(f.path) if f.is_dir else {f.path: f.file_size or 0})
        return files

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        """Every value logged of metric ``key``, as (step, value), in step order."""
        history = self.client.get_metric_history(self.run_id, key)
        return sorted((m.step, m.value) for m in history)

    def mark_recorded(self) -> None:
        """Tag the run ``recorded=true``: everything it should hold has been written."""
        self.set_tags({RECORDED: "true"})

    def reopen(self) -> None:
        """Mark an ended run RUNNING again (a study resumed in its parent run)."""
        self.client.update_run(self.run_id, status="RUNNING")

    def finish(self, status: str = "FINISHED") -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.client.set_terminated(self.run_id, status)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish("FINISHED")
            return
        reason = f"{exc_type.__name__}: {exc}".splitlines()[0][:500] if exc else exc_type.__name__
        self.set_tags({"error": reason})
        self.finish("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")
