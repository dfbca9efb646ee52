"""Several workers, several machines, and faults: what PostgreSQL, the journal and the MLflow
tracking server hold afterwards."""

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.trial import TrialState
from servers import unavailable
from sqlalchemy.exc import IntegrityError, OperationalError, PendingRollbackError

from study import workers
from study.commandline import helper_commands, parser
from study.storage import (
    PASSWORD_ENV,
    StorageError,
    WorkerStorage,
    _disconnected,
    expand,
    for_helpers,
    open_storage,
)
from study.workers import (
    RETRY_ATTR,
    WORKER_ATTR,
    fail_dead_trials,
    parse_worker,
    unattended,
    worker_alive,
    worker_id,
)


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


def test_inline_password_reaches_helpers_through_the_environment_only():
    url = "postgresql+psycopg2://optuna:s3cr3t@db.example:5432/studies"
    args = parser().parse_args(["run", "--storage", url, "--workers", "3", "--n-trials", "7"])
    commands = helper_commands(args, "s")
    assert len(commands) == 2 and not any("s3cr3t" in part for c in commands for part in c)
    storage = commands[0][commands[0].index("--storage") + 1]
    assert storage == f"postgresql+psycopg2://optuna:${{{PASSWORD_ENV}}}@db.example:5432/studies"
    assert for_helpers(url)[1] == {PASSWORD_ENV: "s3cr3t"}
    assert for_helpers("journal:x.log") == ("journal:x.log", {})


def test_url_references_are_expanded_only_when_opened(monkeypatch):
    monkeypatch.setenv("DB_PW", "pa:ss")
    assert expand("mysql://u:${DB_PW}@h/db") == "mysql://u:pa:ss@h/db"
    monkeypatch.delenv("DB_PW")
    with pytest.raises(StorageError, match=r"refers to \$\{DB_PW\}, which is not set"):
        expand("mysql://u:${DB_PW}@h/db")


class _Flaky:
    """A storage whose database is away for the first ``outage`` calls of each method."""

    def __init__(self, outage, finished=False):
        self.outage, self.calls = outage, {}
        self.state = TrialState.COMPLETE if finished else TrialState.RUNNING

    def _call(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.calls[name] <= self.outage:
            try:
                raise OperationalError("SELECT 1", {}, Exception("connection refused"))
            except OperationalError as err:
                raise StorageInternalError("commit failed") from err

    def get_all_studies(self):
        self._call("get_all_studies")
        return ["studies"]

    def set_trial_state_values(self, trial_id, state, values=None):
        if self.state.is_finished():
            raise UpdateFinishedTrialError("finished")
        self.state = state  # committed; then the reply is lost
        self._call("set_trial_state_values")
        return True

    def get_trial(self, trial_id):
        return optuna.trial.create_trial(state=self.state, value=0.0)


def test_calls_are_repeated_while_the_database_is_away(caplog):
    flaky = _Flaky(outage=2)
    storage = WorkerStorage(flaky, patience=30)
    with caplog.at_level(logging.WARNING, logger="study.storage"):
        assert storage.get_all_studies() == ["studies"]
    assert flaky.calls["get_all_studies"] == 3
    assert "storage connection lost (connection refused)" in caplog.text
    # a COMPLETE committed by an attempt whose reply was lost: repeating it is no error
    assert storage.set_trial_state_values(0, TrialState.COMPLETE, [0.1]) is True
    # but a trial finished by someone else is, and without patience the first loss too
    with pytest.raises(UpdateFinishedTrialError):
        WorkerStorage(_Flaky(0, finished=True), patience=30).set_trial_state_values(
            0, TrialState.FAIL
        )
    with pytest.raises(StorageInternalError):
        WorkerStorage(_Flaky(outage=1)).get_all_studies()


def _raised(error, cause=None):
    try:
        try:
            raise cause
        except BaseException as inner:
            raise error from inner
    except BaseException as err:
        return err


@pytest.mark.parametrize(
    "error, lost",
    [
        (
            _raised(
                StorageInternalError("commit failed"),
                OperationalError("SELECT 1", {}, Exception("server closed the connection")),
            ),
            True,
        ),
        # Optuna's fallback read after a failed one meets the session the lost connection spoiled
        (_raised(StorageInternalError("commit failed"), PendingRollbackError("rolled back")), True),
        (
            _raised(
                StorageInternalError("commit failed"),
                IntegrityError("INSERT", {}, Exception("duplicate key")),
            ),
            False,
        ),
        (ValueError("not a database error"), False),
    ],
)
def test_what_counts_as_a_lost_connection(error, lost):
    assert _disconnected(error) is lost


def test_trials_are_labelled_with_their_worker_as_they_start(tmp_path):
    study = optuna.create_study(storage=open_storage(f"journal:{tmp_path / 'j.log'}"))
    study.enqueue_trial({"x": 0.5})
    queued, new = study.ask(), study.ask()
    for trial in (queued, new):
        assert study.trials[trial.number].user_attrs == {WORKER_ATTR: worker_id()}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_reused_process_id_is_not_the_dead_worker(tmp_path):
    host, pid, start = parse_worker(worker_id())
    assert (host, pid) == (socket.gethostname(), os.getpid()) and start.isdigit()
    assert worker_alive(worker_id()) is True
    # the same pid, started at another time: the worker that had the pid is gone
    reused = f"{host}:{pid}:{int(start) + 1}"
    assert worker_alive(reused) is False
    assert worker_alive(f"{host}:{pid}") is True  # an earlier version's label: the pid alone
    assert worker_alive(f"elsewhere:{pid}:{start}") is None  # another machine: cannot tell
    # a trial labelled with it is failed and queued again, the live worker's is left running
    study = optuna.create_study(storage=open_storage(f"journal:{tmp_path / 'j.log'}"))
    _live, dead = study.ask(), study.ask()
    study._storage.set_trial_user_attr(dead._trial_id, WORKER_ATTR, reused)
    assert fail_dead_trials(study) == 1
    states = [t.state for t in study.trials]
    assert states == [TrialState.RUNNING, TrialState.FAIL, TrialState.WAITING]
    assert reused in study.trials[1].user_attrs["fail_reason"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_an_ended_worker_not_yet_reaped_is_dead():
    proc = subprocess.Popen(
        [sys.executable, "-c", "import os; print(os.getpid())"], stdout=subprocess.PIPE, text=True
    )
    pid = int(proc.stdout.readline())
    label = f"{socket.gethostname()}:{pid}"
    deadline = time.monotonic() + 30
    while worker_alive(label) and time.monotonic() < deadline:  # until it has exited
        time.sleep(0.05)
    assert worker_alive(label) is False
    os.kill(pid, 0)  # still in the process table (a zombie): the pid alone would say alive
    proc.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_runs_are_left_to_live_workers_and_taken_over_from_gone_ones(tmp_path, monkeypatch):
    host, pid, start = parse_worker(worker_id())
    parent = os.getppid()  # alive, and another process than this one
    labels = {
        "mine": worker_id(),
        "live": f"{host}:{parent}:{workers._stat(parent)[19]}",
        "dead": f"{host}:{pid}:{int(start) + 1}",
        "elsewhere": "elsewhere:7:7",
    }
    study = optuna.create_study(storage=open_storage(f"journal:{tmp_path / 'j.log'}"))
    number = {}
    for name, label in labels.items():
        trial = study.ask()
        study._storage.set_trial_user_attr(trial._trial_id, WORKER_ATTR, label)
        study.tell(trial, 0.5)
        number[name] = trial.number
    silent = study.ask()  # failed by Optuna's heartbeat check: its worker is gone, wherever
    study._storage.set_trial_user_attr(silent._trial_id, WORKER_ATTR, "elsewhere:8:8")
    study.tell(silent, state=TrialState.FAIL)
    study.ask()  # still running: nobody's to take over
    found = {t.number for t in unattended(study.trials)}
    assert found == {number["mine"], number["dead"], silent.number}
    monkeypatch.setattr(workers, "RECORD_GRACE_SECONDS", -1)  # long enough ago
    assert number["elsewhere"] in {t.number for t in unattended(study.trials)}


def test_without_proc_a_worker_is_its_pid(monkeypatch, tmp_path):
    monkeypatch.setattr(workers, "PROC", tmp_path / "no-proc")
    assert worker_id() == f"{socket.gethostname()}:{os.getpid()}"
    assert worker_alive(worker_id()) is True
    assert worker_alive(f"{socket.gethostname()}:{os.getpid()}:12345") is True  # cannot tell
    assert parse_worker("h:12:34") == ("h", 12, "34")
    assert parse_worker("h:12") == ("h", 12, None) and parse_worker("h") == ("h", None, None)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_a_silent_trial_is_failed_by_heartbeat_and_queued_once_more(tmp_path):
    # the trial's own worker (this process) is alive: only the stopped heartbeat tells
    storage = open_storage(f"sqlite:///{tmp_path / 'hb.db'}", heartbeat=1)
    study = optuna.create_study(storage=storage, study_name="hb")
    trial = study.ask()
    x = trial.suggest_float("x", 0.0, 1.0)
    storage.record_heartbeat(trial._trial_id)
    deadline = time.monotonic() + 60
    while fail_dead_trials(study) == 0:  # after 4 silent beats
        assert time.monotonic() < deadline, "the silent trial was never failed"
        time.sleep(0.5)
    dead, retry = study.trials
    assert dead.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert retry.params == {"x": x} and retry.user_attrs == {RETRY_ATTR: 0}
    assert retry.system_attrs["failed_trial"] == 0
    assert fail_dead_trials(study) == 0  # failed and queued once, not again


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
