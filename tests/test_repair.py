"""Nothing lost: runs whose writes were lost are found by the fault drill's checks and repaired
when the study is next opened; a tracking store that fails mid-study is counted, named and
makes the command exit non-zero."""

import os
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from optuna.trial import TrialState
from test_study import spec

from experiments.runner import train_all, train_and_evaluate
from study import fault_checks, search
from study.cli import main
from study.objective import MEASURES_ATTR
from study.recording import StudyTracking
from study.repair import REPAIRED, Repaired, repair
from study.results import RUN_ATTR
from study.search import run_study
from study.storage import open_storage
from study.workers import WORKER_ATTR, parse_worker, recover, worker_id
from tracking.runs import RECORDED, Run, Tracker
from tracking.writer import Writer


def lose_writes(monkeypatch, lost: dict[str, tuple[str, ...]]) -> None:
    """Writes sent for the runs named in ``lost`` (``{"trial 1": methods kept}``) vanish, as
    those of a worker killed while they were still queued."""
    send = Writer.send

    def lossy(self, run_id, method, *args, **kwargs):
        kept = lost.get(kwargs.get("what"))
        if kept is None or method in kept:
            send(self, run_id, method, *args, **kwargs)

    monkeypatch.setattr(Writer, "send", lossy)


def problems(study, uri, data):
    drill = fault_checks.Drill(study.study_name)
    fault_checks.check_records(drill, study.trials, Tracker(study.study_name, uri), data, "check")
    return drill.problems


def test_lost_writes_fail_the_drill_and_are_repaired_when_the_study_is_opened(
    tiny_data, tracking_uri, tmp_path, monkeypatch
):
    # trial 1 loses every write its worker queued (killed before its writer got to them), trial
    # 2 all but its metrics (the last of which carry the end tags); the study ends as before
    # this repair existed
    with monkeypatch.context() as patch:
        lose_writes(patch, {"trial 1": (), "trial 2": ("log_metric_steps",)})
        patch.setattr(search, "repair", lambda *args, **kwargs: Repaired())
        out = run_study(
            spec(), tiny_data, f"journal:{tmp_path / 'j.log'}", n_trials=3, progress=False
        )
    study = out.study
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    found = problems(study, tracking_uri, tiny_data)
    assert not [p for p in found if "trial 0:" in p]
    for lost in (
        "trial 1: run RUNNING, not FINISHED",
        "trial 1: metrics missing: constraint",
        "trial 2: run RUNNING, not FINISHED",
        "trial 2: artefacts missing: config.json",
    ):
        assert any(lost in p for p in found), (lost, found)
    assert any("trial 1: val_mse not logged after epochs [1, 2]" in p for p in found)
    client = MlflowClient(tracking_uri)
    runs = {t.number: t.user_attrs[RUN_ATTR] for t in study.trials}
    history_2 = client.get_metric_history(runs[2], "val_mse")

    # the study opened again: both repaired, by training them again
    track = StudyTracking.open(study, {}, tracking_uri)
    recover(study, track)
    done = repair(study, track, tiny_data)
    track.close()
    assert (done.retrained, done.relogged, done.failed) == ([1, 2], [], [])
    assert problems(study, tracking_uri, tiny_data) == []
    for number in (1, 2):
        t, run = study.trials[number], client.get_run(runs[number])
        assert run.data.tags[RECORDED] == "true" and run.data.tags[REPAIRED] == "retrained"
        for key in t.user_attrs[MEASURES_ATTR]:  # the final measures as Optuna stored them
            if key.startswith("test_"):
                assert run.data.metrics[key] == pytest.approx(t.user_attrs[key], nan_ok=True)
        assert run.data.metrics["val_mse"] == pytest.approx(t.value, rel=1e-4)
    # what trial 2 had kept is not logged twice
    assert [(m.step, m.value) for m in client.get_metric_history(runs[2], "val_mse")] == [
        (m.step, m.value) for m in history_2
    ]
    assert [m.step for m in client.get_metric_history(runs[1], "val_mse")] == [1, 2]
    # a repaired study is left as it is the next time
    track = StudyTracking.open(study, {}, tracking_uri)
    assert len(repair(study, track, tiny_data)) == 0
    track.close()

    # losses no mark can show, which the drill's checks still see: an artefact file gone, a
    # tag gone, a run deleted
    Path(
        client.get_run(runs[0]).info.artifact_uri.removeprefix("file://"),
        "figures",
        "activations.png",
    ).unlink()
    client.delete_tag(runs[1], "feasible")
    client.delete_run(runs[2])
    found = problems(study, tracking_uri, tiny_data)
    assert any("trial 0: artefacts missing: figures/activations.png" in p for p in found)
    assert any("trial 1: tags feasible=None" in p for p in found)
    assert any("trial 2: no run" in p for p in found)


def test_a_trial_killed_before_its_run_was_made_gets_a_failed_run(
    tiny_data, tracking_uri, tmp_path
):
    study = optuna.create_study(
        study_name="lost", storage=open_storage(f"journal:{tmp_path / 'j.log'}")
    )
    trial = study.ask()  # its worker died right after: no run, no config
    host, pid, start = parse_worker(worker_id())
    study._storage.set_trial_user_attr(
        trial._trial_id, WORKER_ATTR, f"{host}:{pid}:{int(start or 0) + 1}"
    )
    track = StudyTracking.open(study, {}, tracking_uri)
    assert recover(study, track) == 1
    track.close()
    dead = study.trials[0]
    assert dead.state == TrialState.FAIL and RUN_ATTR not in dead.user_attrs
    assert problems(study, tracking_uri, tiny_data) == []
    (run,) = [
        r
        for r in MlflowClient(tracking_uri).search_runs(
            [Tracker("lost", tracking_uri).experiment_id]
        )
        if r.data.tags.get("trial") == "0"
    ]
    assert run.info.status == "FAILED" and "before the run was created" in run.data.tags["reason"]
    # without that run the drill's check fails
    MlflowClient(tracking_uri).delete_run(run.info.run_id)
    assert problems(study, tracking_uri, tiny_data) == ["check: FAIL trial 0: no run"]


def _run_args(tiny_npz, tmp_path, n_trials):
    return [
        "run",
        "--family",
        "sparse_kl",
        "--data",
        tiny_npz,
        "--epochs",
        "2",
        "--pruner",
        "none",
        "--n-trials",
        str(n_trials),
        "--study-name",
        "store",
        "--storage",
        f"journal:{tmp_path / 'j.log'}",
        "--set",
        "train.batch_size=64",
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--confirm-seeds",
        "0",
    ]


def test_a_store_failing_mid_study_is_counted_named_and_exits_non_zero(
    tiny_npz, tracking_uri, tmp_path, monkeypatch, capsys
):
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
        "(log_file, mark_recorded); first: log_file: OSError: [Errno 28] No space left"
    )
    # this process writes again once the writer's writes are done: it repaired both runs
    assert "2 completed trial(s) whose runs lacked their record were repaired" in out
    study = optuna.load_study(
        study_name="store", storage=open_storage(f"journal:{tmp_path / 'j.log'}")
    )
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    client = MlflowClient(tracking_uri)
    for t in study.trials:
        run = client.get_run(t.user_attrs[RUN_ATTR])
        assert run.data.tags[RECORDED] == "true"
        assert [f.path for f in client.list_artifacts(run.info.run_id, "model")] == [
            "model/model.keras"
        ]
    assert main(_run_args(tiny_npz, tmp_path, 1)) == 0  # resumable, and nothing left to repair


def test_a_run_that_cannot_be_created_stops_the_asking(
    tiny_npz, tracking_uri, tmp_path, monkeypatch, capsys
):
    start_run, made = Tracker.start_run, []

    # the parent's run and two trials' runs, then no more
    def readonly(self, name, *args, **kwargs):
        made.append(name)
        if len(made) > 3:
            raise MlflowException("(sqlite3.OperationalError) attempt to write a readonly database")
        return start_run(self, name, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Tracker, "start_run", readonly)
        assert main(_run_args(tiny_npz, tmp_path, 4)) == 1
    err = capsys.readouterr().err.splitlines()
    assert [x for x in err if x.startswith("error:")] == [
        "error: cannot create the run of trial 2: MlflowException: (sqlite3.OperationalError) "
        "attempt to write a readonly database. The study is saved; run the same command to go "
        "on (runs left unrecorded are repaired then)"
    ]
    study = optuna.load_study(
        study_name="store", storage=open_storage(f"journal:{tmp_path / 'j.log'}")
    )
    # the trials in the pack trained to their end; no trial asked after the failure
    assert [t.state for t in study.trials] == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.FAIL,
    ]
    assert "cannot create the run" in study.trials[2].user_attrs["fail_reason"]
    assert main(_run_args(tiny_npz, tmp_path, 1)) == 0
    study = optuna.load_study(
        study_name="store", storage=open_storage(f"journal:{tmp_path / 'j.log'}")
    )
    assert study.trials[3].state == TrialState.COMPLETE


def test_several_configs_train_as_one_pack_as_they_train_alone(tiny_data):
    cfgs = [
        spec().base.replace(
            **{"model.family": "sparse_kl", "model.beta": beta, "train.learning_rate": lr}
        )
        for beta, lr in [(0.3, 3e-3), (3.0, 1e-3), (0.01, 1e-2)]
    ]
    packed = train_all(cfgs, tiny_data, slots=2)  # the third waits for a free slot
    for cfg, result in zip(cfgs, packed, strict=True):
        alone = train_and_evaluate(cfg, tiny_data)
        for key in ("val_mse", "test_mse", "val_mean_activation"):
            np.testing.assert_allclose(result.final[key], alone.final[key], rtol=1e-4)
        assert result.history.keys() == alone.history.keys()
