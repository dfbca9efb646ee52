"""The study's confirmation of its winners on fresh seeds, and its baselines."""

import dataclasses
import json

import optuna
from conftest import tiny
from mlflow import MlflowClient
from optuna.trial import TrialState
from test_study import spec

from experiments import runner
from study import baselines, confirm
from study.cli import main
from study.report import console
from study.results import ROUNDS, Constraint, Seeded, StudySpec
from study.search import run_study
from study.storage import open_storage


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


def test_confirmation_ranks_by_the_mean_over_fresh_seeds_among_those_that_hold():
    # trial 0 wins the search (seed 0) but only by luck: on fresh seeds trial 1 is better;
    # trial 2 is better still but misses the target on every seed, trial 3 on one seed only
    # (met on average: its denser seeds reconstruct better)
    target = Constraint("mean_activation", 0.05)
    lucky = _confirmed(
        _trial("sparse_kl", 0.030, 0.04), 0, [0.040, 0.039, 0.041], [0.04, 0.04, 0.04]
    )
    steady = _confirmed(
        _trial("sparse_kl", 0.033, 0.04), 1, [0.035, 0.034, 0.036], [0.045, 0.050, 0.048]
    )
    noisy = _confirmed(
        _trial("sparse_kl", 0.034, 0.049), 2, [0.030, 0.031, 0.032], [0.058, 0.060, 0.055]
    )
    wavering = _confirmed(
        _trial("sparse_kl", 0.034, 0.049), 3, [0.036, 0.031, 0.030], [0.030, 0.058, 0.055]
    )
    found = {c.number: c for c in (lucky, steady, noisy, wavering)}
    winners = confirm.winners(found, ["sparse_kl"], target)
    assert winners["sparse_kl"] is steady
    assert confirm.overall(winners) is steady
    assert steady.holds(target) and not noisy.holds(target) and not wavering.holds(target)
    # with only the lucky one confirmed, it is the winner: the ranking is among confirmations
    assert confirm.winners({0: lucky}, ["sparse_kl"], target)["sparse_kl"] is lucky
    assert confirm.winners(found, ["sparse_kl"], Constraint("mean_activation", 0.01)) == {}


def test_a_family_gets_its_next_candidates_while_none_holds():
    target = Constraint("mean_activation", 0.05)
    trials = []
    for number in range(7):
        t = _trial("sparse_kl", 0.030 + number / 1000, 0.04)
        t.number = number
        trials.append(t)
    trials.append(_trial("sparse_kl", 0.01, 0.09))  # infeasible in the search: never a candidate
    ncae = _trial("ncae", 0.02, 0.04)
    ncae.number = 9
    trials.append(ncae)
    misses = {n: _confirmed(trials[n], n, [0.03] * 3, [0.04, 0.06, 0.04]) for n in range(7)}
    holds = {n: _confirmed(trials[n], n, [0.03] * 3, [0.04] * 3) for n in range(7)}

    def chosen(confirmed, settled=()):
        return [
            t.number
            for t in confirm.candidates(
                trials, ["sparse_kl", "ncae"], target, 2, confirmed, settled
            )
        ]

    assert chosen({}) == [0, 1, 9]  # nothing confirmed: the first round
    assert chosen({0: misses[0]}) == [0, 1, 9]  # trial 1 still to confirm
    assert chosen({0: misses[0], 1: holds[1]}) == [0, 1, 9]  # one holds: no next round
    assert chosen({0: misses[0], 1: misses[1]}) == [0, 1, 2, 3, 9]
    assert chosen({0: misses[0]}, settled={1}) == [0, 1, 2, 3, 9]  # 1 diverged on a seed
    assert chosen(misses) == [*range(2 * ROUNDS), 9]  # at most ROUNDS rounds of 2


def test_a_configuration_missing_the_target_on_a_fresh_seed_gives_way_to_the_next(
    tiny_data, tmp_path
):
    """The search ranked a configuration that diverges first, and put the other two under the
    target; on the fresh seed the dense one misses it, so the next configuration of the family
    is confirmed, and wins. The diverged one is stored: not trained again."""
    study = optuna.create_study(
        study_name="rounds",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log"))
        ),
    )
    dense = tiny("sparse_kl", **{"model.beta": 1e-4})  # about 20 active units per digit
    sparse = tiny("sparse_kl", **{"model.beta": 3.0, "model.p": 0.01})  # about 2
    overflows = tiny("sparse_kl_wd", **{"train.learning_rate": 1e20})  # weight decay overflows
    for val_mse, cfg in ((0.10, overflows), (0.20, dense), (0.23, sparse)):
        study.add_trial(
            optuna.trial.create_trial(
                value=val_mse,
                params={},
                distributions={},
                user_attrs={"config": cfg.flat(), "val_mse": val_mse, "val_l0": 1.0},
            )
        )
    said: list[str] = []
    out = confirm.confirm(
        study, dense, tiny_data, ["sparse_kl"], Constraint("l0", 10.0), 1, 1, say=said.append
    )
    assert out.winners["sparse_kl"].number == 2 and out.winner is out.winners["sparse_kl"]
    assert out.missing == [0] and "confirmed:0" not in study.user_attrs
    assert study.user_attrs["confirmed:1"]["finals"][0]["val_l0"] > 10
    assert study.user_attrs["confirmed:2"]["finals"][0]["val_l0"] <= 10
    assert out.trained == 3 + 3 * len(baselines.lr_grid()) + 3
    assert sum("confirming the next 1" in line for line in said) == 2, said
    assert out.confirmed == {"sparse_kl": 2}
    # asked again: everything stored, the diverged one included; the same winner
    again = confirm.confirm(study, dense, tiny_data, ["sparse_kl"], Constraint("l0", 10.0), 1, 1)
    assert again.trained == 0 and again.missing == [0] and again.winner.number == 2
    # a target neither meets on its fresh seed (about 20 and 2 units): no winner, nothing trained
    strict = Constraint("l0", 1.5)
    none = confirm.confirm(study, dense, tiny_data, ["sparse_kl", "ncae"], strict, 1, 1)
    assert none.trained == 0 and none.winners == {} and none.winner is None
    lines = console.confirmation_lines(none, ["sparse_kl", "ncae"], strict, [])
    assert "sparse_kl none of its 2 confirmed configuration(s) meets the target" in lines[1]
    assert "ncae      no feasible trial to confirm" in lines[2]


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


def _searched(name, n_trials, tiny_npz, tracking_uri, tmp_path) -> list[str]:
    """A sparse_kl study searched but not confirmed; the options that name it."""
    where = ["--study-name", name, "--storage", f"journal:{tmp_path / 'j.log'}"]
    where += ["--tracking-uri", tracking_uri]
    search = ["--family", "sparse_kl", "--data", tiny_npz, "--epochs", "1"]
    search += ["--n-trials", str(n_trials), "--pruner", "none", "--target", "1.0"]
    assert main(["run", *where, *search, "--confirm-seeds", "0"]) == 0
    return where


def test_a_candidate_diverging_on_a_fresh_seed_is_kept_as_such(
    tiny_npz, tracking_uri, tmp_path, monkeypatch, capsys
):
    """The search's best diverges on its fresh seed (a fault put into its training): the next
    configuration is confirmed instead and wins; the report says which one diverged, and a
    second confirmation trains nothing again."""
    where = _searched("d", 3, tiny_npz, tracking_uri, tmp_path)
    study = optuna.load_study(study_name="d", storage=open_storage(where[3]))
    first, second = sorted(study.trials, key=lambda t: t.value)[:2]
    real, calls = runner.train_all, []

    def first_diverges(cfgs, data, slots=None):
        results = real(cfgs, data, slots)
        calls.append(len(cfgs))
        return [None, *results[1:]] if len(calls) == 1 else results  # its seed 1: jobs first

    monkeypatch.setattr(runner, "train_all", first_diverges)
    confirming = ["--confirm-top", "1", "--confirm-seeds", "1"]
    assert main(["confirm", *where, *confirming]) == 0
    out = capsys.readouterr().out
    assert f"not confirmed (a seed diverged): trial(s) {first.number}" in out
    assert f"confirmed winner: trial {second.number} " in out
    assert main(["report", *where, "--out", str(tmp_path / "r")]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["winner"]["trial"] == second.number
    assert summary["unconfirmed_candidates"] == []
    report = (tmp_path / "r" / "report.md").read_text()
    assert f"trial(s) {first.number} diverged on a fresh seed" in report
    monkeypatch.setattr(runner, "train_all", real)
    capsys.readouterr()
    assert main(["confirm", *where, *confirming]) == 0
    assert "confirming" not in capsys.readouterr().out  # nothing trained again


def test_a_study_none_of_whose_configurations_holds_says_so(
    tiny_npz, tracking_uri, tmp_path, monkeypatch, capsys
):
    """Every fresh-seed training comes out above the target (a fault put into the measures):
    every round is confirmed, nothing holds, and the report and the summary say that, without
    offering a confirmation that would train nothing."""
    where = _searched("n", 4, tiny_npz, tracking_uri, tmp_path)
    real = runner.train_all

    def dense(cfgs, data, slots=None):
        return [
            dataclasses.replace(r, final={**r.final, "val_mean_activation": 2.0})
            for r in real(cfgs, data, slots)
        ]

    monkeypatch.setattr(runner, "train_all", dense)
    assert main(["confirm", *where, "--confirm-top", "1", "--confirm-seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert "sparse_kl none of its 3 confirmed configuration(s) meets the target" in out
    assert main(["report", *where, "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "to confirm it" not in out, out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["winner"] is None and summary["unconfirmed_candidates"] == []
    report = (tmp_path / "r" / "report.md").read_text()
    assert "No confirmed winner: none of the 3 configuration(s)" in report
