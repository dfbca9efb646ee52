"""Several workers, several machines, and faults, in parts: the storage's retries, worker
labels, telling a dead worker from a live one."""

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.trial import TrialState
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


def test_an_error_on_a_journal_file_loads_no_database_library():
    # telling a lost connection from another error needs SQLAlchemy only where it is in use: a
    # study on a journal file would otherwise load it (0.15 s) at its first ordinary error
    code = (
        "import sys; from study.storage import _disconnected; "
        "assert not _disconnected(KeyError('no such trial')); "
        "print('sqlalchemy.exc' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
