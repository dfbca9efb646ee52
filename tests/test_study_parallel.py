"""The study with trials side by side: killed and parallel workers, packs of trials trained
together."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from test_study import child_runs, spec

from study import interrupt
from study.cli import main
from study.search import open_study, run_study


def _ctrl_c_heard() -> None:
    # a process started in the background of a shell inherits SIGINT ignored (and Python then
    # leaves it so); a study started from a terminal hears Ctrl-C
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_killed_worker_is_reconciled_and_numbering_continues(sig, tiny_npz, tracking_uri, tmp_path):
    journal = tmp_path / "j.log"
    cmd = [
        sys.executable,
        "-m",
        "study",
        "run",
        "--family",
        "sparse_kl",
        "--data",
        tiny_npz,
        "--epochs",
        "400",
        "--pruner",
        "none",
        "--n-trials",
        "100",
        "--study-name",
        "k",
        "--pack",
        "1",
        "--storage",
        f"journal:{journal}",
        "--set",
        "train.batch_size=64",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_ctrl_c_heard,
    )
    deadline = time.monotonic() + 120
    try:  # (100 trials of 400 epochs: the study cannot end before the signal comes)
        while time.monotonic() < deadline:  # wait until a trial is training
            study = _load("k", journal)
            if study and any(
                t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs
                for t in study.trials
            ):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the study never started a trial")
        time.sleep(1.0)
    finally:
        os.killpg(proc.pid, sig)
        code = proc.wait(timeout=60)
    dead = _load("k", journal).trials[-1]
    client = MlflowClient(tracking_uri)
    if sig == signal.SIGINT:  # Ctrl-C: the trial and its run end at once, the exit code says so
        assert code == 130
        assert dead.state == TrialState.FAIL
        assert client.get_run(dead.user_attrs["mlflow_run_id"]).info.status == "FAILED"
    else:  # SIGKILL: nothing could be ended; the next opening of the study does it
        assert dead.state == TrialState.RUNNING
        assert client.get_run(dead.user_attrs["mlflow_run_id"]).info.status == "RUNNING"
    assert (
        main(
            [
                "run",
                "--family",
                "sparse_kl",
                "--data",
                tiny_npz,
                "--epochs",
                "400",
                "--pruner",
                "none",
                "--n-trials",
                "1",
                "--study-name",
                "k",
                "--storage",
                f"journal:{journal}",
                "--set",
                "train.batch_size=64",
                "--timeout",
                "1",
                "--confirm-seeds",
                "0",
            ]
        )
        == 0
    )
    study = _load("k", journal)
    assert study.trials[dead.number].state == TrialState.FAIL
    assert study.trials[-1].number == dead.number + 1
    killed = client.get_run(dead.user_attrs["mlflow_run_id"])
    assert killed.info.status == "FAILED" and killed.data.tags["state"] == "FAIL"
    after = study.trials[-1]
    if sig == signal.SIGKILL:  # a dead worker's trial runs again, with the same parameters
        assert after.user_attrs["retry_of"] == dead.number and after.params == dead.params
        retry = client.get_run(after.user_attrs["mlflow_run_id"])
        assert retry.data.tags["retry_of"] == str(dead.number)
    else:  # Ctrl-C is the user's choice, not a fault
        assert "retry_of" not in after.user_attrs


def test_a_swallowed_ctrl_c_still_stops_the_study(tiny_data, tmp_path):
    # Python drops a KeyboardInterrupt raised inside a garbage-collector callback (JAX has one),
    # and the study trained on as if Ctrl-C had not been pressed
    journal = tmp_path / "j.log"
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    with interrupt.remembered():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises here
        except KeyboardInterrupt:
            pass  # swallowed
        with pytest.raises(KeyboardInterrupt):
            run_study(spec(), tiny_data, f"journal:{journal}", 3, tracking=False, progress=False)
    trials = _load("s", journal).trials
    # the pack's three trials stopped at the end of their first epoch, before reporting it
    assert [(t.state, t.last_step) for t in trials] == [(TrialState.FAIL, None)] * 3
    interrupt.check()  # forgotten once the block ends
    signal.signal(signal.SIGINT, previous)


def _load(name, journal):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not journal.exists():
        return None
    try:
        return optuna.load_study(
            study_name=name, storage=JournalStorage(JournalFileBackend(str(journal)))
        )
    except KeyError:
        return None


@pytest.mark.slow
def test_parallel_workers_share_one_study_without_serialising(tiny_npz, tracking_uri, tmp_path):
    journal = tmp_path / "j.log"
    assert (
        main(
            [
                "run",
                "--family",
                "sparse_kl",
                "ncae",
                "--data",
                tiny_npz,
                "--epochs",
                "30",
                "--pruner",
                "none",
                "--n-trials",
                "6",
                "--workers",
                "2",
                "--study-name",
                "par",
                "--confirm-seeds",
                "0",
                "--storage",
                f"journal:{journal}",
                "--set",
                "train.batch_size=64",
            ]
        )
        == 0
    )
    trials = _load("par", journal).trials
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    # trials of the two workers ran at the same time
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))
    _, parents, children = child_runs(tracking_uri, "par")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(children) == list(range(6))
    assert {r.info.run_id for r in children.values()} == {
        t.user_attrs["mlflow_run_id"] for t in trials
    }


def test_a_pack_prunes_its_slots_one_by_one_and_refills_them(
    tiny_data, tracking_uri, tmp_path, monkeypatch
):
    # trial 1 is pruned after its first epoch; its slot takes trial 3 while 0 and 2 train on
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: self.number == 1)
    out = run_study(
        spec(epochs=3),
        tiny_data,
        f"journal:{tmp_path / 'j.log'}",
        n_trials=5,
        progress=False,
        pack=3,
    )
    trials = out.study.trials
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    assert trials[1].last_step == 1 and trials[0].last_step == 3
    assert trials[3].datetime_start < trials[0].datetime_complete  # refilled mid-pack
    client, _, children = child_runs(tracking_uri, "s")
    assert sorted(children) == [0, 1, 2, 3, 4]
    for t in trials:
        run = children[t.number]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_mse")]
        assert steps == list(range(1, t.last_step + 1))
        assert run.data.tags["state"] == t.state.name
    assert {f.path for f in client.list_artifacts(children[3].info.run_id, "figures")} == {
        f"figures/{n}.png"
        for n in ("reconstruction", "receptive_fields", "activations", "latent_scatter")
    }


def test_packed_trials_score_as_trained_one_after_another(tiny_data, tmp_path):
    params = [
        {
            "model.family": "sparse_kl",
            "model.beta": b,
            "model.p": p,
            "model.weight_decay": w,
            "train.learning_rate": lr,
        }
        for b, p, w, lr in [
            (0.3, 0.05, 1e-4, 3e-3),
            (0.01, 0.2, 1e-6, 1e-2),
            (3.0, 0.01, 1e-3, 1e-3),
        ]
    ]
    scores = {}
    for pack in (1, 3):
        storage = f"journal:{tmp_path / f'{pack}.log'}"
        study = open_study(spec(), storage)
        for p in params:
            study.enqueue_trial(p)
        out = run_study(
            spec(), tiny_data, storage, n_trials=3, tracking=False, progress=False, pack=pack
        )
        scores[pack] = [
            (t.value, t.user_attrs["test_mse"], t.user_attrs["val_mean_activation"])
            for t in out.study.trials
        ]
    np.testing.assert_allclose(scores[3], scores[1], rtol=1e-4)
