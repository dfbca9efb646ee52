"""The study: what Optuna and MLflow stored for small studies on tiny data."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from experiments.presets import DEFAULT
from study import baselines, confirm, space
from study.cli import main
from study.commandline import helper_commands, parser, spec_from_args
from study.objective import MissingMetric, Objective
from study.results import Constraint, Seeded, StudySpec, best_feasible
from study.search import StudyError, open_study, run_study
from study.storage import mask


def spec(name="s", families=("sparse_kl",), target=0.05, epochs=2, pruner="none"):
    base = DEFAULT.replace(**{"name": "study", "train.epochs": epochs, "train.batch_size": 64})
    return StudySpec(name=name, families=families, target=target, base=base, pruner=pruner)


def child_runs(uri, study_name):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(study_name)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {int(r.data.tags["trial"]): r for r in runs if "trial" in r.data.tags}
    return client, parents, children


def test_study_stores_trials_constraints_and_nested_runs(tiny_data, tracking_uri, tmp_path):
    storage = f"journal:{tmp_path / 'j.log'}"
    out = run_study(
        spec(families=("sparse_l1", "ncae")), tiny_data, storage, n_trials=3, progress=False
    )
    trials = out.study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for t in trials:
        act = t.user_attrs["val_mean_activation"]
        assert t.constraints == {"mean_activation": pytest.approx(act - 0.05)}
        assert t.value == pytest.approx(t.user_attrs["val_mse"])
        assert set(t.params) == {"model.family", *space.FAMILY_PARAMS[t.params["model.family"]]}
        assert {
            "test_mse",
            "val_active_fraction",
            "val_hoyer",
            "val_dead_units",
            "train_seconds",
            "mlflow_run_id",
            "config",
        } <= set(t.user_attrs)
    client, parents, children = child_runs(tracking_uri, "s")
    assert len(parents) == 1 and sorted(children) == [0, 1, 2]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["families"] == "sparse_l1,ncae" and parent.data.tags["target"] == "0.05"
    assert parent.data.tags["storage"] == storage and parent.data.tags["pruner"] == "none"
    assert parent.data.tags["sampler"] == "TPE" and parent.data.tags["git_commit"]
    assert parent.data.tags["data"] == "mnist-5k"
    for number, run in children.items():
        t = trials[number]
        assert run.info.run_name == str(number) and run.info.status == "FINISHED"
        assert run.info.run_id == t.user_attrs["mlflow_run_id"]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["state"] == "COMPLETE" and run.data.tags["study"] == "s"
        assert run.data.tags["data.hash"] == tiny_data.content_hash
        assert run.data.tags["data.n_train"] == "300"
        assert run.data.tags["backend"] == keras.backend.backend()
        assert run.data.tags["feasible"] == str(t.constraints["mean_activation"] <= 0).lower()
        assert run.data.params["model.family"] == t.params["model.family"]
        assert float(run.data.params["train.learning_rate"]) == pytest.approx(
            t.params["train.learning_rate"]
        )
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_mse")] == [1, 2]
        assert run.data.metrics["constraint"] == pytest.approx(t.constraints["mean_activation"])
        files = {f.path for f in client.list_artifacts(run.info.run_id, "figures")}
        assert files == {
            f"figures/{n}.png"
            for n in ("reconstruction", "receptive_fields", "activations", "latent_scatter")
        }
        top = {f.path for f in client.list_artifacts(run.info.run_id)}
        assert {"config.json", "history.csv", "model"} <= top


def test_pruned_trial_keeps_its_constraint_and_the_study_goes_on(
    tiny_data, tracking_uri, tmp_path, monkeypatch
):
    # trial 1 is pruned by the pruner's verdict (a diverging trial: test_bad_input.py)
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: self.number == 1)
    out = run_study(spec(), tiny_data, f"journal:{tmp_path / 'j.log'}", n_trials=3, progress=False)
    states = [t.state for t in out.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    pruned = out.study.trials[1]
    assert pruned.last_step == 1 and "mean_activation" in pruned.constraints
    _, _, children = child_runs(tracking_uri, "s")
    assert (children[1].info.status, children[1].data.tags["state"]) == ("KILLED", "PRUNED")
    assert out.counts() == {
        "COMPLETE": 2,
        "PRUNED": 1,
        "FAIL": 0,
        "RUNNING": 0,
        "feasible": sum(
            t.constraints.get("mean_activation", 1) <= 0
            for t in out.study.trials
            if t.state == TrialState.COMPLETE
        ),
    }


@pytest.mark.parametrize(
    "pruner, kind",
    [("hyperband", optuna.pruners.HyperbandPruner), ("median", optuna.pruners.MedianPruner)],
)
def test_the_real_pruners_get_the_mse_plus_the_violation(
    pruner, kind, tiny_data, tracking_uri, tmp_path
):
    target, epochs = 1e-3, 4  # below most trials: the violation counts
    out = run_study(
        spec(epochs=epochs, pruner=pruner, target=target),
        tiny_data,
        f"journal:{tmp_path / 'j.log'}",
        n_trials=10,
        progress=False,
        pack=2,
    )
    assert isinstance(out.study.pruner, kind)
    client = MlflowClient(tracking_uri)
    pruned, violated = 0, 0
    for t in out.study.trials:
        # what the run recorded after each epoch: the values the pruner should have been given
        run_id = t.user_attrs["mlflow_run_id"]
        mse, act = (
            {m.step: m.value for m in client.get_metric_history(run_id, key)}
            for key in ("val_mse", "val_mean_activation")
        )
        assert sorted(t.intermediate_values) == sorted(mse) == list(range(1, t.last_step + 1))
        for step, value in t.intermediate_values.items():
            assert value == pytest.approx(mse[step] + max(0.0, act[step] - target), rel=1e-9)
            violated += act[step] > target
        if t.state == TrialState.PRUNED:  # its constraint is its last epoch's, for the sampler
            pruned += 1
            assert t.last_step < epochs
            assert t.constraints == {
                "mean_activation": pytest.approx(act[t.last_step] - target, rel=1e-9)
            }
        else:
            assert t.state == TrialState.COMPLETE and t.last_step == epochs
    assert pruned and violated  # the pruner did prune, and the violation counted
    assert len(out.study.trials) == 10


def test_resume_continues_numbering_in_the_same_parent_run(tiny_data, tracking_uri, tmp_path):
    storage = f"journal:{tmp_path / 'j.log'}"
    run_study(spec(), tiny_data, storage, n_trials=2, progress=False)
    out = run_study(spec(), tiny_data, storage, n_trials=2, progress=False)
    assert [t.number for t in out.study.trials] == [0, 1, 2, 3]
    _, parents, children = child_runs(tracking_uri, "s")
    assert len(parents) == 1 and sorted(children) == [0, 1, 2, 3]
    with pytest.raises(StudyError, match="exists with target=0.05, not 0.1"):
        open_study(spec(target=0.1), storage)
    with pytest.raises(StudyError, match="exists with train.epochs=2, not 3"):
        open_study(spec(epochs=3), storage)


def test_without_tracking_nothing_is_written_to_mlflow(tiny_data, tracking_uri, tmp_path):
    out = run_study(
        spec(),
        tiny_data,
        f"sqlite:///{tmp_path / 'o.db'}",
        n_trials=1,
        tracking=False,
        progress=False,
    )
    assert out.study.trials[0].state == TrialState.COMPLETE
    assert "mlflow_run_id" not in out.study.trials[0].user_attrs
    assert not Path(tracking_uri.removeprefix("sqlite:///")).exists()


def test_missing_monitored_metric_is_an_error(tiny_data):
    study = optuna.create_study()
    trial = study.ask()
    hook = Objective(spec(), tiny_data)._pruning(trial)
    with pytest.raises(MissingMetric, match="val_mse"):
        hook(1, {"loss": 0.1})


def test_best_feasible_ignores_infeasible_trials():
    study = optuna.create_study()
    for value, violation in [(0.01, 0.5), (0.03, -0.01), (0.02, 0.0)]:
        t = study.ask()
        t.set_constraint("mean_activation", violation)
        study.tell(t, value)
    assert best_feasible(study.trials).value == 0.02


def test_near_edge_and_ranges_contain_published_settings():
    assert space.near_edge("model.beta", 1e-3) == "low"
    assert space.near_edge("model.beta", 9.9) == "high"
    assert space.near_edge("model.beta", 3.0) is None
    published = {
        "model.beta": 3.0,
        "model.p": 0.05,
        "model.weight_decay": 0.006,
        "model.alpha": 0.003,
        "model.l1": 1e-7,
    }
    for key, value in published.items():
        assert space.RANGES[key].low < value < space.RANGES[key].high


def test_storage_password_is_masked():
    assert mask("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask("journal:studies/x.log") == "journal:studies/x.log"


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
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
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


def test_families_share_the_budget(tiny_data, tmp_path):
    out = run_study(
        spec(families=("sparse_l1", "sparse_kl", "ncae"), epochs=1),
        tiny_data,
        f"journal:{tmp_path / 'j.log'}",
        n_trials=6,
        tracking=False,
        progress=False,
    )
    families = [t.params["model.family"] for t in out.study.trials]
    assert sorted(families) == ["ncae", "ncae", "sparse_kl", "sparse_kl", "sparse_l1", "sparse_l1"]
    assert not out.study.get_trials(states=(TrialState.WAITING,))  # nothing left queued


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


def _trial(family, val_mse, activation):
    config = {"model.family": family, "train.seed": 0}
    return optuna.trial.create_trial(
        value=val_mse,
        params={},
        distributions={},
        user_attrs={"config": config, "val_mse": val_mse, "val_mean_activation": activation},
    )


def _confirmed(trial, number, val_mses, activations):
    trial.number = number
    finals = tuple(
        {"val_mse": v, "test_mse": v, "val_mean_activation": a}
        for v, a in zip(val_mses, activations, strict=True)
    )
    return confirm.Confirmed(trial, Seeded((1, 2, 3), finals))


def test_confirmation_ranks_by_the_mean_over_fresh_seeds():
    # trial 0 wins the search (seed 0) but only by luck: on fresh seeds trial 1 is better;
    # trial 2 is better still on average but infeasible on average over its seeds
    target = Constraint("mean_activation", 0.05)
    lucky = _confirmed(
        _trial("sparse_kl", 0.030, 0.04), 0, [0.040, 0.039, 0.041], [0.04, 0.04, 0.04]
    )
    steady = _confirmed(
        _trial("sparse_kl", 0.033, 0.04), 1, [0.035, 0.034, 0.036], [0.045, 0.050, 0.048]
    )
    noisy = _confirmed(
        _trial("sparse_kl", 0.034, 0.049), 2, [0.030, 0.031, 0.032], [0.049, 0.060, 0.055]
    )
    found = {c.number: c for c in (lucky, steady, noisy)}
    winners = confirm.winners(found, ["sparse_kl"], target)
    assert winners["sparse_kl"] is steady
    assert confirm.overall(winners) is steady
    assert not noisy.feasible(target) and steady.feasible(target)
    # with only the lucky one confirmed, it is the winner: the ranking is among confirmations
    assert confirm.winners({0: lucky}, ["sparse_kl"], target)["sparse_kl"] is lucky
    assert confirm.winners(found, ["sparse_kl"], Constraint("mean_activation", 0.01)) == {}


def test_confirmation_and_baselines_are_stored_tracked_and_reused(
    tiny_data, tracking_uri, tmp_path
):
    storage = f"journal:{tmp_path / 'j.log'}"
    fixed = spec(families=("sparse_kl", "ncae"), target=1.0)
    fixed = StudySpec(
        fixed.name,
        fixed.families,
        1.0,
        fixed.base.replace(
            **{
                "model.activation": "sigmoid",
                "model.penalty_layers": "both",
                "model.decoder_norm": 10.0,
            }
        ),
        "none",
    )
    out = run_study(
        fixed, tiny_data, storage, n_trials=4, progress=False, confirm_top=1, confirm_seeds=2
    )
    c = out.confirmation
    study = out.study
    assert c.trained == 2 * 2 + 3 * len(baselines.lr_grid()) + 3 * 2
    for family, winner in c.winners.items():
        attr = study.user_attrs[f"confirmed:{winner.number}"]
        assert attr["seeds"] == [1, 2] and len(attr["finals"]) == 2
        best = min(
            (
                t
                for t in study.trials
                if t.params["model.family"] == family and t.state == TrialState.COMPLETE
            ),
            key=lambda t: t.value,
        )
        assert winner.number == best.number  # top 1: the search's best of its family
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("s")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags][0]
    confirms = [r for r in runs if r.data.tags.get("kind") == "confirmation"]
    assert len(confirms) == 2 * 2 and all(r.info.status == "FINISHED" for r in confirms)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in confirms)
    assert {(r.data.tags["confirms"], r.data.tags["seed"]) for r in confirms} == {
        (str(w.number), s) for w in c.winners.values() for s in ("1", "2")
    }
    assert all("trial" not in r.data.tags for r in confirms)  # not mistaken for trial runs
    # the baselines inherit the study's fixed settings; only family, penalties, rate, seed differ
    base_runs = [r for r in runs if r.data.tags.get("kind") == "baseline"]
    assert sorted({r.data.tags["baseline"] for r in base_runs}) == ["ae", "ncae", "sparse_kl_wd"]
    for r in base_runs:
        p = r.data.params
        assert (
            p["model.activation"],
            p["model.penalty_layers"],
            p["model.decoder_norm"],
            p["train.epochs"],
            p["train.batch_size"],
        ) == ("sigmoid", "both", "10.0", "2", "64")
        b = study.user_attrs[f"baseline:{r.data.tags['baseline']}"]
        assert float(p["train.learning_rate"]) == b["learning_rate"]
        assert b["learning_rate"] == min(b["grid"], key=lambda point: point[1])[0]
    # resumed: nothing new to confirm, nothing trained again
    again = confirm.confirm(
        study, fixed.base, tiny_data, list(fixed.families), fixed.constraint, top=1, n_seeds=2
    )
    assert again.trained == 0 and again.winners.keys() == c.winners.keys()


def test_a_fresh_seed_retrains_best_config_within_the_confirmed_spread(
    tiny_npz, tracking_uri, tmp_path
):
    """What a user does with the report: retrain ``best_config.json`` with seeds the study never
    used. Each lands within the confirmed mean ± 3 sd and within 10 % of it (a budget long enough
    to train: ten epochs of 300 digits, four confirmation seeds)."""
    import json

    from experiments import cli as experiments_cli

    where = [
        "--study-name",
        "fresh",
        "--storage",
        f"journal:{tmp_path / 'j.log'}",
        "--tracking-uri",
        tracking_uri,
    ]
    assert (
        main(
            [
                "run",
                "--family",
                "sparse_l1",
                "sparse_kl",
                "--data",
                tiny_npz,
                "--epochs",
                "10",
                "--n-trials",
                "4",
                "--pruner",
                "none",
                "--target",
                "1.0",
                "--confirm-top",
                "1",
                "--confirm-seeds",
                "4",
                "--set",
                "train.batch_size=32",
                *where,
            ]
        )
        == 0
    )
    assert main(["report", *where, "--out", str(tmp_path / "report")]) == 0
    confirmed = json.loads((tmp_path / "report" / "summary.json").read_text())["winner"][
        "confirmed"
    ]
    mean, sd = confirmed["test_mse_mean"], confirmed["test_mse_sd"]
    assert confirmed["seeds"] == [1, 2, 3, 4] and sd > 0
    client = MlflowClient(tracking_uri)
    for seed in (11, 12, 13):
        assert (
            experiments_cli.main(
                [
                    "run",
                    "--config",
                    str(tmp_path / "report" / "best_config.json"),
                    "--set",
                    f"train.seed={seed}",
                    "--tracking-uri",
                    tracking_uri,
                    "--experiment",
                    f"retrain-{seed}",
                ]
            )
            == 0
        )
        exp = client.get_experiment_by_name(f"retrain-{seed}")
        [run] = client.search_runs([exp.experiment_id])
        fresh = run.data.metrics["test_mse"]
        assert abs(fresh - mean) <= 3 * sd and abs(fresh - mean) <= 0.1 * mean, (
            seed,
            fresh,
            mean,
            sd,
        )


@pytest.mark.parametrize(
    "argv, epochs",
    [
        ([], 50),
        (["--data", "fashion-mnist"], 20),
        (["--data", "mnist"], 20),
        (["--data", "fashion-mnist", "--epochs", "7"], 7),
    ],
)
def test_the_default_budget_follows_the_data(argv, epochs):
    # 50 epochs of mnist-5k's 3,200 digits; 20 of the full sets' 48,000 images
    args = parser().parse_args(["run", *argv, "--workers", "2"])
    spec = spec_from_args(args)
    assert spec.base.train.epochs == epochs and spec.name.endswith(f"-{epochs}ep")
    [helper] = helper_commands(args, spec.name)
    assert helper[helper.index("--epochs") + 1] == str(epochs)
