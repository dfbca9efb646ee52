"""Several workers on several machines, and servers that go away mid-study: what PostgreSQL
and the MLflow tracking server hold afterwards; tests that need a server nobody can start."""

import json
import subprocess
import sys
import time

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from servers import unavailable

from study.storage import open_storage
from study.workers import WORKER_ATTR


@pytest.mark.parametrize(
    "ci, outcome", [("", pytest.skip.Exception), ("true", pytest.fail.Exception)]
)
def test_a_missing_server_skips_its_tests_but_fails_them_in_ci(ci, outcome, monkeypatch):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="PostgreSQL cannot be started"):
        unavailable("PostgreSQL cannot be started here: initdb not found")


def study_args(data, name, storage, uri, *extra):
    return [
        "run",
        "--family",
        "sparse_kl",
        "ncae",
        "--data",
        data,
        "--epochs",
        "2",
        "--pruner",
        "none",
        "--study-name",
        name,
        "--storage",
        storage,
        "--tracking-uri",
        uri,
        "--set",
        "train.batch_size=64",
        "--confirm-seeds",
        "0",
        *extra,
    ]


def runs_by_trial(client, name):
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = {}
    for r in runs:
        if "trial" in r.data.tags:
            children.setdefault(int(r.data.tags["trial"]), []).append(r)
    return [r for r in runs if "trial" not in r.data.tags], children


def _trial_runs(client, name):
    """The trial runs of study ``name`` so far (none before its experiment exists)."""
    if client.get_experiment_by_name(name) is None:
        return []
    return [r for rs in runs_by_trial(client, name)[1].values() for r in rs]


class _Study:
    """``python -m study run ...`` in the background, its output in ``log``."""

    def __init__(self, args, log):
        url = args[args.index("--storage") + 1]
        self.log, self.name = log, args[args.index("--study-name") + 1]
        # one storage for every look, opened (and its tables made) before the workers start
        self.storage = open_storage(url)
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "study", *args], stdout=out, stderr=subprocess.STDOUT
            )

    def fail(self, what):
        pytest.fail(f"{what}; study output: {self.log.read_text()[-3000:]}")

    def wait_for(self, what, condition, timeout=300):
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.fail(what)
            time.sleep(0.3)  # workers and servers give no sign but their stores: poll them

    def _done(self):
        try:
            trials = optuna.load_study(study_name=self.name, storage=self.storage).trials
        except KeyError:  # not created yet
            return []
        return [t for t in trials if t.state == TrialState.COMPLETE]

    def completed(self):
        return len(self._done())

    def completed_by(self):
        """How many workers have completed a trial."""
        return len({t.user_attrs.get(WORKER_ATTR) for t in self._done()})

    def end(self):
        try:
            code = self.proc.wait(timeout=600)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        if code != 0:
            self.fail(f"the study exited {code}")


@pytest.mark.slow
def test_two_workers_on_postgres_and_a_tracking_server_that_restarts_mid_study(
    postgres, mlflow_server, tiny_npz, monkeypatch, tmp_path
):
    # the password written into the URL: masked in tags, handed to the helper by environment
    monkeypatch.delenv("PGPASSWORD", raising=False)
    url = postgres.create_database("two_workers")
    storage = url.replace("optuna@", f"optuna:{postgres.password}@")
    n = 6
    run = _Study(
        study_args(
            tiny_npz, "pg-two", storage, mlflow_server.url, "--n-trials", str(n), "--workers", "2"
        ),
        tmp_path / "study.log",
    )
    client = MlflowClient(mlflow_server.url)
    open_runs = []  # trial runs not yet ended when the server goes

    def running():
        open_runs[:] = [
            r.info.run_id for r in _trial_runs(client, "pg-two") if r.info.status == "RUNNING"
        ]
        return run.completed() >= 1 and open_runs

    run.wait_for("no trial completed while others were open", running)
    mlflow_server.stop()  # gone for as long as a restart takes
    down = time.time()
    mlflow_server.start()
    up = time.time()
    run.end()
    study = optuna.load_study(study_name="pg-two", storage=run.storage)
    trials = study.trials
    assert sorted(t.number for t in trials) == list(range(n))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs[WORKER_ATTR] for t in trials}) == 2
    parents, children = runs_by_trial(client, "pg-two")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["storage"] == url.replace("optuna@", "optuna:***@")
    assert sorted(children) == list(range(n)) and all(len(r) == 1 for r in children.values())
    for t in trials:
        run_ = children[t.number][0]
        assert run_.info.status == "FINISHED"
        assert run_.info.run_id == t.user_attrs["mlflow_run_id"]
        figures = {f.path for f in client.list_artifacts(run_.info.run_id, "figures")}
        assert "figures/reconstruction.png" in figures
        # uploaded through the server into its artefact root: workers need no shared folder
        assert list(mlflow_server.artifacts.rglob(f"{run_.info.run_id}/artifacts/config.json"))
    # the runs open when the server went were written to and ended once it was back: their
    # workers kept what they had to write until the server answered again
    ended = [client.get_run(run_id).info for run_id in open_runs]
    assert all(i.status == "FINISHED" and i.end_time > up * 1000 for i in ended), (down, up, ended)
    # the password is nowhere: output of both workers, run params and tags, Optuna's attrs,
    # the server's log, the artefacts
    stored = [run.log.read_text(), mlflow_server.log.read_text()]
    for r in [*parents, *(r for rs in children.values() for r in rs)]:
        stored += [json.dumps(r.data.params), json.dumps(r.data.tags)]
    stored += [json.dumps(study.user_attrs, default=str)]
    stored += [json.dumps([t.user_attrs, t.system_attrs], default=str) for t in trials]
    stored += [
        p.read_bytes().decode("latin-1") for p in mlflow_server.artifacts.rglob("*") if p.is_file()
    ]
    assert not [s for s in stored if postgres.password in s]


@pytest.mark.slow
def test_database_going_away_mid_study_loses_nothing(
    postgres, tiny_npz, tracking_uri, monkeypatch, tmp_path
):
    monkeypatch.setenv("PGPASSWORD", postgres.password)  # libpq's way: no password in the URL
    storage = postgres.create_database("outage")
    n = 8
    run = _Study(
        study_args(
            tiny_npz, "outage", storage, tracking_uri, "--n-trials", str(n), "--workers", "2"
        ),
        tmp_path / "study.log",
    )
    # both workers have a trial done, so both hold the storage open when it goes
    run.wait_for("no trial completed by each worker", lambda: run.completed_by() >= 2)
    postgres.stop()
    try:  # down until both workers have found it gone and are waiting for it
        run.wait_for(
            "the workers did not notice the database had gone",
            lambda: run.log.read_text().count("storage connection lost") >= 2,
            timeout=120,
        )
    finally:
        postgres.start()
    run.end()
    trials = optuna.load_study(study_name="outage", storage=run.storage).trials
    assert sorted(t.number for t in trials) == list(range(n))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    _, children = runs_by_trial(MlflowClient(tracking_uri), "outage")
    assert sorted(children) == list(range(n))
    assert all(len(r) == 1 and r[0].info.status == "FINISHED" for r in children.values())
