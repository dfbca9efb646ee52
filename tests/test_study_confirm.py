"""The study's confirmation of its winners on fresh seeds, and its baselines."""

import optuna
from mlflow import MlflowClient
from optuna.trial import TrialState
from test_study import spec

from study import baselines, confirm
from study.cli import main
from study.results import Constraint, Seeded, StudySpec
from study.search import run_study


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
