"""The fault drill in its short form (``make faults`` runs the long one): workers killed with
SIGKILL in the middle of trials lose no finished trial, no run's record, and leave nothing
RUNNING. (That the drill's checks fail on a lost record: tests/test_repair.py.)"""

from collections import Counter

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from study.cli import main
from study.storage import open_storage
from study.workers import RETRY_ATTR, WORKER_ATTR, retries_left


@pytest.mark.slow
def test_killed_workers_lose_no_trial_and_leave_no_run_running(tmp_path, capsys):
    assert (
        main(
            [
                "faults",
                "--workers",
                "2",
                "--trials",
                "2",
                "--cycles",
                "2",
                "--epochs",
                "3",
                "--dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "4 finished trials of 4, 4 unique numbers, 4 with exactly one child run" in out
    assert "4 of 4 COMPLETE trials' runs hold their whole record" in out
    assert "kill 2:" in out and "faults: all checks passed" in out
    assert "4 of 4 phase-1 runs unchanged in MLflow" in out
    # what the stores say, read here rather than taken from the drill's own report
    storage = open_storage(f"journal:{tmp_path / 'optuna-journal.log'}")
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    states = Counter(t.state for t in trials)
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(finished) == 4 + 2 * 3  # phase 1, then 2 workers x 3 trials around the kills
    assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0
    assert states[TrialState.FAIL] >= 2
    assert len({t.number for t in trials}) == len(trials)
    retries = {t.user_attrs[RETRY_ATTR]: t for t in trials if RETRY_ATTR in t.user_attrs}
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    by_trial = Counter(r.data.tags["trial"] for r in runs if "trial" in r.data.tags)
    status = {r.data.tags["trial"]: r.info.status for r in runs if "trial" in r.data.tags}
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert all(by_trial[str(t.number)] == 1 for t in finished)
    assert max(by_trial.values()) == 1
    for t in finished:  # its whole record, whether its worker lived to write it or not
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["recorded"] == "true" and run.data.tags["state"] == "COMPLETE"
        assert run.data.tags["feasible"] in ("true", "false")
        assert {"val_mse", "test_mse", "constraint"} <= set(run.data.metrics)
        assert [f.path for f in client.list_artifacts(run.info.run_id, "model")] == [
            "model/model.keras"
        ]
    for t in trials:
        if t.state != TrialState.FAIL:
            continue
        assert status[str(t.number)] == "FAILED"  # every failed trial has its run
        if retries_left(t):  # a killed trial runs again, in another process
            retry = retries[t.number]
            assert retry.params == t.params
            assert retry.user_attrs[WORKER_ATTR] != t.user_attrs[WORKER_ATTR]
