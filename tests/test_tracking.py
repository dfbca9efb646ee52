"""tracking.runs: plain values in, what MLflow stored out."""

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tracking.runs import PARENT_TAG, RECORDED, Tracker
from tracking.store import tracking_uri
from tracking.writer import QueuedRun, Writer


def test_uri_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///rel.db")
    assert tracking_uri() == f"sqlite:///{tmp_path / 'rel.db'}"
    assert tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_artifacts_live_beside_the_sqlite_store(tracking_uri, tmp_path):
    tracker = Tracker("beside")
    with tracker.start_run("r") as run:
        run.log_text("hello", "note.txt")
    assert (tmp_path / "mlartifacts" / "beside" / run.run_id / "artifacts" / "note.txt").exists()


def test_params_metrics_tags_and_nesting(tracking_uri):
    tracker = Tracker("nest")
    params = {f"p{i:03d}": i for i in range(250)}  # more than one MLflow batch
    with tracker.start_run("parent", tags={"study": "s"}) as parent:
        with tracker.start_run("0", params=params, parent=parent) as child:
            child.log_metrics({"val_mse": 0.5, "nan": float("nan")}, step=1)
            child.log_metrics({"val_mse": 0.25}, step=2)
    client = MlflowClient(tracking_uri)
    stored = client.get_run(child.run_id)
    assert stored.data.tags[PARENT_TAG] == parent.run_id
    assert stored.data.params == {k: str(v) for k, v in params.items()}
    assert [(m.step, m.value) for m in client.get_metric_history(child.run_id, "val_mse")] == [
        (1, 0.5),
        (2, 0.25),
    ]
    assert client.get_run(parent.run_id).data.tags["study"] == "s"


@pytest.mark.parametrize(
    "exc, status", [(ValueError("bad\nthing"), "FAILED"), (KeyboardInterrupt(), "KILLED")]
)
def test_run_ends_failed_or_killed_with_the_reason(exc, status, tracking_uri):
    tracker = Tracker("faults")
    with pytest.raises(type(exc)):
        with tracker.start_run("r") as run:
            raise exc
    stored = MlflowClient(tracking_uri).get_run(run.run_id)
    assert stored.info.status == status
    assert stored.data.tags["error"].startswith(type(exc).__name__)
    assert "\n" not in stored.data.tags["error"]


def test_unknown_status_is_refused(tracking_uri):
    run = Tracker("s").start_run("r")
    with pytest.raises(ValueError, match="status must be one of"):
        run.finish("DONE")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has ended, waiting to be reaped


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_the_writer_ends_with_a_killed_training_process(tracking_uri):
    # a worker killed by SIGKILL cannot stop its writer process; it must not live on, waiting
    script = (
        "import multiprocessing, os, signal, sys\n"
        "from tracking.writer import Writer\n"
        "Writer(sys.argv[1])\n"
        "print(*[p.pid for p in multiprocessing.active_children()], flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, tracking_uri], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL
    writers = [int(pid) for pid in done.stdout.split()]
    assert len(writers) == 1
    deadline = time.monotonic() + 10
    while _alive(writers[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(writers[0]), "the writer outlived its training process"


def test_a_run_is_marked_recorded_only_when_every_write_to_it_succeeded(
    tracking_uri, capsys, tmp_path, monkeypatch
):
    tracker = Tracker("marks")
    clean, broken = (
        tracker.start_run(name, tags={RECORDED: "false"}) for name in ("clean", "broken")
    )
    writer = Writer(tracker.uri)
    try:
        for run, what in ((clean, "trial 0"), (broken, "trial 1")):
            queued = QueuedRun(writer, run.run_id, what=what)
            queued.log_metrics({"x": 1.0}, step=1)
            if run is broken:
                queued.finish("DONE")  # refused in the writer's process, as a failing store
            queued.mark_recorded()
        writer.flush()
        assert writer.failures == 2  # the failed write, and the mark not set after it
        assert "trial 1 (finish, mark_recorded)" in writer.summary()
        assert "warning: tracking failed (trial 1, finish): ValueError" in capsys.readouterr().err
        # a writer whose process died: what is sent after is counted, never raised
        (pid,) = writer._process._processes
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while writer.failures < 3 and time.monotonic() < deadline:
            QueuedRun(writer, clean.run_id, what="trial 0").set_tags({"late": 1})
            writer.flush()
        assert writer.failures >= 3 and "trial 0 (log_metric_steps)" in writer.summary()
        # nor does a file sent after leave its copy behind
        (tmp_path / "tmp").mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
        (tmp_path / "model.keras").write_text("a model")
        QueuedRun(writer, clean.run_id).log_file(tmp_path / "model.keras", "model")
        writer.flush()
        assert not list((tmp_path / "tmp").iterdir())
    finally:
        writer.close()
    client = MlflowClient(tracking_uri)
    assert client.get_run(clean.run_id).data.tags[RECORDED] == "true"
    assert client.get_run(clean.run_id).data.metrics == {"x": 1.0}
    assert client.get_run(broken.run_id).data.tags[RECORDED] == "false"


def test_a_sqlite_store_commits_to_a_write_ahead_log(tracking_uri):
    # in SQLite's default journal mode every one of MLflow's commits waits for the disk twice
    Tracker("wal").start_run("a run", params={"x": 1})
    path = tracking_uri.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert MlflowClient(tracking_uri).search_runs(
        [MlflowClient(tracking_uri).get_experiment_by_name("wal").experiment_id]
    )[0].data.params == {"x": "1"}
