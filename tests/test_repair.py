"""Nothing lost: a tracking store that fails mid-study is counted, named and makes the command
exit non-zero; the runs it left unrecorded are repaired."""

import os

import numpy as np
import optuna
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from optuna.trial import TrialState
from test_study import spec

from experiments.runner import train_all, train_and_evaluate
from study.cli import main
from study.storage import open_storage
from study.tracking import RUN_ATTR
from tracking.runs import RECORDED, Run, Tracker


def _run_args(tiny_npz, tmp_path, n_trials):
    return ["run", "--family", "sparse_kl", "--data", tiny_npz, "--epochs", "2", "--pruner",
            "none", "--n-trials", str(n_trials), "--study-name", "store",
            "--storage", f"journal:{tmp_path / 'j.log'}", "--set", "train.batch_size=64",
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]


def test_a_store_failing_mid_study_is_counted_named_and_exits_non_zero(
        tiny_npz, tracking_uri, tmp_path, monkeypatch, capsys):
    # the writer's store fills up after trial 0's model: every later file write fails there
    me, calls, log_file = os.getpid(), [], Run.log_file

    def full(self, *args):
        if os.getpid() != me:  # the writer's process
            calls.append(1)
            if len(calls) > 1:
                raise OSError(28, "No space left on device")
        log_file(self, *args)

    with monkeypatch.context() as patch:
        patch.setattr(Run, "log_file", full)
        assert main(_run_args(tiny_npz, tmp_path, 3)) == 1
    out, err = capsys.readouterr()
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert line == [line[0]] and line[0].startswith(
        "error: 4 tracking write(s) failed: trial 1 (log_file, mark_recorded), trial 2 "
        "(log_file, mark_recorded); first: log_file: OSError: [Errno 28] No space left")
    # this process writes again once the writer's writes are done: it repaired both runs
    assert "2 completed trial(s) whose runs lacked their record were repaired" in out
    study = optuna.load_study(study_name="store",
                              storage=open_storage(f"journal:{tmp_path / 'j.log'}"))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    client = MlflowClient(tracking_uri)
    for t in study.trials:
        run = client.get_run(t.user_attrs[RUN_ATTR])
        assert run.data.tags[RECORDED] == "true"
        assert [f.path for f in client.list_artifacts(run.info.run_id, "model")] == [
            "model/model.keras"]
    assert main(_run_args(tiny_npz, tmp_path, 1)) == 0  # resumable, and nothing left to repair


def test_a_run_that_cannot_be_created_stops_the_asking(tiny_npz, tracking_uri, tmp_path,
                                                       monkeypatch, capsys):
    start_run, made = Tracker.start_run, []

    def readonly(self, name, *args, **kwargs):  # the parent's run and two trials' runs, then no more
        made.append(name)
        if len(made) > 3:
            raise MlflowException("(sqlite3.OperationalError) attempt to write a readonly "
                                  "database")
        return start_run(self, name, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Tracker, "start_run", readonly)
        assert main(_run_args(tiny_npz, tmp_path, 4)) == 1
    err = capsys.readouterr().err.splitlines()
    assert [x for x in err if x.startswith("error:")] == [
        "error: cannot create the run of trial 2: MlflowException: (sqlite3.OperationalError) "
        "attempt to write a readonly database. The study is saved; run the same command to go "
        "on (runs left unrecorded are repaired then)"]
    study = optuna.load_study(study_name="store",
                              storage=open_storage(f"journal:{tmp_path / 'j.log'}"))
    # the trials in the pack trained to their end; no trial asked after the failure
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE,
                                               TrialState.FAIL]
    assert "cannot create the run" in study.trials[2].user_attrs["fail_reason"]
    assert main(_run_args(tiny_npz, tmp_path, 1)) == 0
    study = optuna.load_study(study_name="store",
                              storage=open_storage(f"journal:{tmp_path / 'j.log'}"))
    assert study.trials[3].state == TrialState.COMPLETE


def test_several_configs_train_as_one_pack_as_they_train_alone(tiny_data):
    cfgs = [spec().base.replace(**{"model.family": "sparse_kl", "model.beta": beta,
                                   "train.learning_rate": lr})
            for beta, lr in [(0.3, 3e-3), (3.0, 1e-3), (0.01, 1e-2)]]
    packed = train_all(cfgs, tiny_data, slots=2)  # the third waits for a free slot
    for cfg, result in zip(cfgs, packed):
        alone = train_and_evaluate(cfg, tiny_data)
        for key in ("val_mse", "test_mse", "val_mean_activation"):
            np.testing.assert_allclose(result.final[key], alone.final[key], rtol=1e-4)
        assert result.history.keys() == alone.history.keys()
