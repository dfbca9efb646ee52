"""The study: what Optuna and MLflow stored for small studies on tiny data."""

import gc
from pathlib import Path

import keras
import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from experiments.presets import DEFAULT
from study import space
from study.commandline import helper_commands, parser, spec_from_args
from study.objective import MissingMetric, Objective
from study.results import StudySpec, best_feasible
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
    assert gc.get_freeze_count() == 0  # the objects frozen for the study are collected again


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
