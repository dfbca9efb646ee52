"""The study report: its files against what Optuna and MLflow stored, its honesty, bad input."""

import csv
import json
import re
import shlex
from pathlib import Path

import keras
import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from sklearn.decomposition import PCA

from experiments import cli as experiments_cli
from experiments import data as data_module
from experiments.config import load_json
from experiments.metrics import mse
from study.cli import main
from study.recording import PARENT_ATTR
from study.report import plots, structural
from study.results import SPEC_ATTR, Constraint, feasible
from study.storage import open_storage
from tracking.registry import model_name

FIGURES = {
    "frontier",
    "history",
    "importances",
    "slice_sparse_kl",
    "slice_ncae",
    "best_reconstruction",
    "best_receptive_fields",
    "best_activations",
}


def stored(reported):
    return optuna.load_study(study_name=reported.name, storage=open_storage(reported.storage))


def figure_links(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", md)


def summary(reported):
    return json.loads((reported.folder / "summary.json").read_text())


def test_report_files_show_what_optuna_and_mlflow_stored(reported_study, tiny_npz):
    study, folder = stored(reported_study), reported_study.folder
    s = summary(reported_study)
    assert s["winner"] is not None, "the fixture's target should leave a confirmed winner"
    winner = study.trials[s["winner"]["trial"]]
    assert sorted(p.name for p in folder.iterdir()) == [
        "best_config.json",
        "figures",
        "report.html",
        "report.md",
        "summary.json",
        "trials.csv",
    ]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".report")]
    assert json.loads((folder / "best_config.json").read_text()) == winner.user_attrs["config"]

    rows = list(csv.DictReader((folder / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == [t.number for t in study.trials]
    for row, t in zip(rows, study.trials, strict=True):
        assert row["state"] == t.state.name == "COMPLETE"
        assert row["mlflow_run_id"] == t.user_attrs["mlflow_run_id"]
        assert float(row["value"]) == t.value
        assert float(row["constraint"]) == t.constraints["mean_activation"]
        assert row["feasible"] == str(feasible(t)).lower()
        assert float(row["test_mse"]) == t.user_attrs["test_mse"]
        assert float(row["val_l0"]) == t.user_attrs["val_l0"]
        assert {k: row[k] for k in t.params} == {k: str(v) for k, v in t.params.items()}

    md = (folder / "report.md").read_text()
    c = s["winner"]["confirmed"]
    assert (
        f"Confirmed winner: trial {winner.number} ({s['winner']['family']}), test MSE "
        f"{c['test_mse_mean']:.4f} ± {c['test_mse_sd']:.4f} over fresh seeds 1, 2"
    ) in md
    assert (
        f"In the search, on the study's seed alone, it scored val MSE "
        f"{winner.user_attrs['val_mse']:.4f}, test MSE "
        f"{winner.user_attrs['test_mse']:.4f}"
    ) in md
    assert "6 complete" in md and "sampler: TPE; pruner: none" in md
    for label in ("`ae` preset", "`sparse_kl_wd` preset", "`ncae` preset", "mean training image"):
        assert f"| {label} |" in md
    dense = next(b for b in s["baselines"] if b["name"] == "ae")
    assert f"lr {dense['learning_rate']:g} of 6 tried" in md
    assert f"{s['cost_of_sparsity']['vs_dense']:.2f}× the tuned dense autoencoder's" in md
    data = data_module.load(tiny_npz)
    pca = PCA(n_components=32, random_state=0).fit(data.x_train)
    pca_mse = mse(data.x_test, pca.inverse_transform(pca.transform(data.x_test)))
    assert re.search(rf"\| PCA, 32 components \| [^|]+ \| [0-9.]+ \| {pca_mse:.4f} \|", md)

    links = figure_links(md)
    assert {Path(p).stem for p in links} == FIGURES and len(links) == len(FIGURES)
    for link in links:
        assert (folder / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (folder / "report.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == len(links)
    assert (
        'src="figures/' not in page and "http" not in page.split("<body>")[1].split("MLflow:")[0]
    )  # nothing to fetch before the MLflow link at the end

    client = MlflowClient(reported_study.uri)
    logged = {f.path for f in client.list_artifacts(study.user_attrs[PARENT_ATTR], "report")}
    assert {
        "report/report.html",
        "report/report.md",
        "report/best_config.json",
        "report/summary.json",
        "report/trials.csv",
        "report/figures",
    } <= logged
    # the winner's figures are those of its median confirmation seed's run
    run_id = re.search(r"Figures: artefacts of its MLflow run `(\w+)`", md)[1]
    assert client.get_run(run_id).data.tags["confirms"] == str(winner.number)
    run_figure = Path(
        client.download_artifacts(run_id, "figures/activations.png", str(folder.parent))
    )
    assert run_figure.read_bytes() == (folder / "figures" / "best_activations.png").read_bytes()


def test_summary_json_names_the_confirmed_winner_and_the_baselines(reported_study):
    s = summary(reported_study)
    study = stored(reported_study)
    w = s["winner"]
    assert set(w) >= {"trial", "family", "config", "search", "confirmed"}
    assert set(w["search"]) >= {"val_mse", "test_mse", "mean_activation", "l0"}
    assert set(w["confirmed"]) >= {
        "seeds",
        "test_mse_mean",
        "test_mse_sd",
        "val_mse_mean",
        "mean_activation_mean",
        "l0_mean",
    }
    assert w["confirmed"]["seeds"] == [1, 2]  # fresh: the search trained on seed 0
    attr = study.user_attrs[f"confirmed:{w['trial']}"]
    tests = [f["test_mse"] for f in attr["finals"]]
    assert w["confirmed"]["test_mse_mean"] == pytest.approx(np.mean(tests))
    assert w["confirmed"]["test_mse_sd"] == pytest.approx(np.std(tests, ddof=1))
    assert w["config"] == study.trials[w["trial"]].user_attrs["config"]
    assert [b["name"] for b in s["baselines"]] == ["ae", "sparse_kl_wd", "ncae"]
    for b in s["baselines"]:
        assert {"name", "learning_rate", "test_mse_mean"} <= set(b)
        assert b["learning_rate"] in b["learning_rates_tried"]
    assert s["registered_model"] == f"models:/{model_name(reported_study.name)}/1"


def test_the_registered_winner_loads_from_the_model_registry(reported_study, tmp_path):
    import mlflow
    import mlflow.keras

    s = summary(reported_study)
    mlflow.set_tracking_uri(reported_study.uri)
    try:
        model = mlflow.keras.load_model(s["registered_model"])
    finally:
        mlflow.set_tracking_uri(None)
    data = data_module.load(s["data"])
    reconstructed = np.asarray(model(data.x_test[:50]))
    version = MlflowClient(reported_study.uri).get_model_version(
        model_name(reported_study.name), s["registered_model"].rsplit("/", 1)[1]
    )
    assert version.tags["trial"] == str(s["winner"]["trial"])
    assert json.loads(version.tags["config"]) == s["winner"]["config"]
    assert float(version.tags["test_mse_mean"]) == pytest.approx(
        s["winner"]["confirmed"]["test_mse_mean"], rel=1e-5
    )
    # it is the model its confirmation run logged (the median of the winner's seeds)
    run = MlflowClient(reported_study.uri).get_run(version.run_id)
    assert run.data.tags["confirms"] == str(s["winner"]["trial"])
    assert int(run.data.tags["seed"]) in s["winner"]["confirmed"]["seeds"]
    logged = MlflowClient(reported_study.uri).download_artifacts(
        version.run_id, "model/model.keras", str(tmp_path)
    )
    own = keras.saving.load_model(logged, safe_mode=True)
    np.testing.assert_allclose(reconstructed, np.asarray(own(data.x_test[:50])), atol=1e-6)


def test_user_strings_are_text_on_the_page(reported_study):
    page = (reported_study.folder / "report.html").read_text()
    assert "<i>" not in page
    assert "<title>Study &lt;i&gt;tiny&lt;/i&gt; &amp; &quot;co&quot;</title>" in page
    md = (reported_study.folder / "report.md").read_text()
    outside_code = re.sub(r"```.*?```|`[^`\n]*`", "", md, flags=re.DOTALL)
    assert "<i>" not in outside_code and "&lt;i&gt;tiny" in outside_code


def retrain(reported, seed: int, experiment: str) -> float:
    assert (
        experiments_cli.main(
            [
                "run",
                "--config",
                str(reported.folder / "best_config.json"),
                "--set",
                f"train.seed={seed}",
                "--tracking-uri",
                reported.uri,
                "--experiment",
                experiment,
            ]
        )
        == 0
    )
    client = MlflowClient(reported.uri)
    [run] = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run.data.metrics["test_mse"]


def seeds_test_mse(cfg, data, seeds) -> list[float]:
    """The test MSE of ``cfg`` trained on each of ``seeds``, all in one pack."""
    from experiments.packed import PackedTrainer
    from experiments.train import evaluate_split

    trainer, out = PackedTrainer(cfg, data, len(seeds)), {}
    for slot, seed in enumerate(seeds):
        trainer.assign(slot, cfg.replace(**{"train.seed": seed}))
    trainer.run(
        lambda results: out.update(
            {
                slot: evaluate_split(trainer.export(slot), data.x_test, "test")["test_mse"]
                for slot, (epoch, _) in results.items()
                if epoch == cfg.train.epochs
            }
        )
    )
    return [out[slot] for slot in range(len(seeds))]


def test_retraining_best_config_repeats_the_trial_and_lands_on_the_confirmed_mean(
    reported_study, tiny_npz
):
    """The honesty check: with the study's seed best_config.json trains to the trial's own
    numbers (the trial trained in a pack, the retraining alone: on the same backend only float
    rounding may differ, and on this CPU none does). With a seed never seen it lands among that
    configuration's seeds, and the confirmed mean with them: eight fresh seeds, trained here in
    one pack, give the spread (two confirmation seeds of two epochs cannot)."""
    w = summary(reported_study)["winner"]
    md = (reported_study.folder / "report.md").read_text()
    assert (
        "with the study's seed, on the same Keras backend, it repeats the trial up to "
        "float rounding" in md
    )
    assert retrain(reported_study, 0, "retrain-0") == pytest.approx(
        w["search"]["test_mse"], rel=1e-6
    )
    fresh = retrain(reported_study, 7, "retrain-7")
    cfg = load_json(reported_study.folder / "best_config.json")
    spread = seeds_test_mse(cfg, data_module.load(tiny_npz), range(7, 15))
    assert fresh == pytest.approx(spread[0], rel=1e-6)  # seed 7 alone is seed 7 in a pack
    # the mean of the confirmation's seeds against eight others': a difference of about
    # 0.8 sd is typical; 4 sd is not chance (another budget or learning rate is)
    confirmed = w["confirmed"]
    assert abs(confirmed["test_mse_mean"] - np.mean(spread)) <= 4 * np.std(spread, ddof=1)


def test_each_family_command_rebuilds_its_confirmed_winner(reported_study):
    study = stored(reported_study)
    families = summary(reported_study)["families"]
    md = (reported_study.folder / "report.md").read_text()
    pairs = re.findall(r"^# (\w+) \(trial (\d+)\)\n(python -m experiments run \w.*)$", md, re.M)
    assert sorted(family for family, _, _ in pairs) == sorted(families)
    for family, number, command in pairs:
        args = experiments_cli._parser().parse_args(shlex.split(command)[3:])
        [cfg] = experiments_cli.configs_from_args(args)
        assert cfg.flat() == study.trials[int(number)].user_attrs["config"]
        assert families[family]["trial"] == int(number)


def test_without_mlflow_or_a_feasible_trial(tiny_npz, tmp_path, monkeypatch, capsys):
    """A study run with --no-tracking whose target nothing met: the report draws the closest
    trial's figures from a retraining, writes no best_config.json and touches no MLflow store;
    run again, it replaces its folder whole."""
    monkeypatch.chdir(tmp_path)
    where = ["--study-name", "dark", "--storage", f"journal:{tmp_path / 'j.log'}"]
    assert (
        main(
            [
                "run",
                "--family",
                "sparse_kl",
                "--data",
                tiny_npz,
                "--epochs",
                "1",
                "--n-trials",
                "1",
                "--target",
                "1e-9",
                "--no-tracking",
                "--confirm-seeds",
                "0",
                *where,
            ]
        )
        == 0
    )
    assert main(["report", *where]) == 0
    folder = tmp_path / "reports" / "dark"
    md = (folder / "report.md").read_text()
    assert "No trial met the target (mean activation ≤ 1e-09); the closest is trial 0" in md
    assert "redrawn from a retraining of its config" in md
    assert "sampler: not recorded (the study ran without MLflow)" in md
    assert {Path(p).stem for p in figure_links(md)} == FIGURES - {"slice_ncae", "importances"}
    assert not (folder / "best_config.json").exists()
    (folder / "stale.txt").write_text("from an earlier report")
    assert main(["report", *where]) == 0
    assert not (folder / "stale.txt").exists() and (folder / "report.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.log", "reports"]
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["dark"]


def _stored_study(path: Path, name: str, states: list[TrialState], data: str = "mnist-5k") -> str:
    """A journal holding a study as `study run` leaves it, its trials ended in ``states``."""
    study = optuna.create_study(study_name=name, storage=open_storage(f"journal:{path}"))
    study.set_user_attr(
        SPEC_ATTR,
        {
            "families": "ncae",
            "target": 0.05,
            "data.name": data,
            "data.val_fraction": 0.2,
            "data.seed": 0,
        },
    )
    for state in states:
        study.tell(study.ask(), 0.1 if state == TrialState.COMPLETE else None, state=state)
    return f"journal:{path}"


@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown study", "no study 'nope' in journal:"),
        ("no completed trial", "study 'stalled' has no completed trial yet (1 fail, 1 pruned)"),
        ("data gone", "gone.npz"),
        ("missing storage", "no study storage at"),
        ("unreadable storage", "cannot open storage 'sqlite:///"),
        ("no such MLflow store", "the MLflow runs of study '<i>tiny</i> & \"co\"' are not in"),
        ("out under a file", "cannot write the report to"),
        ("out not a report", "exists and is not a report folder"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    case, message, reported_study, tmp_path, capsys
):
    args = ["report", *reported_study.where, "--out", str(tmp_path / "out")]
    if case == "unknown study":
        args[2] = "nope"
    elif case == "no completed trial":
        args[2:5] = [
            "stalled",
            "--storage",
            _stored_study(tmp_path / "s.log", "stalled", [TrialState.FAIL, TrialState.PRUNED]),
        ]
    elif case == "data gone":
        args[2:5] = [
            "moved",
            "--storage",
            _stored_study(
                tmp_path / "s.log", "moved", [TrialState.COMPLETE], f"npz:{tmp_path / 'gone.npz'}"
            ),
        ]
    elif case == "missing storage":
        args[4] = f"journal:{tmp_path / 'none.log'}"
    elif case == "unreadable storage":
        (tmp_path / "junk.db").write_text("not a database")
        args[4] = f"sqlite:///{tmp_path / 'junk.db'}"
    elif case == "no such MLflow store":
        args[6] = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    elif case == "out under a file":
        (tmp_path / "file").write_text("")
        args[-1] = str(tmp_path / "file" / "out")
    elif case == "out not a report":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "keep.txt").write_text("mine")
    before = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    journal = Path(reported_study.storage.removeprefix("journal:")).read_bytes()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")} == before
    assert Path(reported_study.storage.removeprefix("journal:")).read_bytes() == journal


@pytest.mark.parametrize(
    "option, measure", [("--target", "mean_activation"), ("--target-l0", "l0")]
)
def test_report_for_another_target_picks_its_winner_from_the_stored_trials(
    reported_study, tmp_path, capsys, option, measure
):
    study = stored(reported_study)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    metric = f"val_{measure}"
    target = float(np.median([t.user_attrs[metric] for t in done]))
    before = {k: v for k, v in study.user_attrs.items()}
    assert (
        main(
            [
                "report",
                *reported_study.where,
                option,
                repr(target),
                "--out",
                str(tmp_path / "other"),
            ]
        )
        == 0
    )
    s = json.loads((tmp_path / "other" / "summary.json").read_text())
    assert s["constraint"] == {"measure": measure, "metric": metric, "target": target}
    # by hand: each family's 2 best feasible trials under the new target (the fixture's
    # --confirm-top), of those confirmed the lowest mean val MSE whose mean measure meets it
    expected, unconfirmed = {}, []
    for family in ("sparse_kl", "ncae"):
        ok = sorted(
            (
                t
                for t in done
                if t.params["model.family"] == family and t.user_attrs[metric] <= target
            ),
            key=lambda t: t.value,
        )[:2]
        scored = []
        for t in ok:
            attr = study.user_attrs.get(f"confirmed:{t.number}")
            if attr is None:
                unconfirmed.append(t.number)
                continue
            means = {k: np.mean([f[k] for f in attr["finals"]]) for k in ("val_mse", metric)}
            if means[metric] <= target:
                scored.append((means["val_mse"], t.number))
        if scored:
            expected[family] = min(scored)[1]
    assert {f: w["trial"] for f, w in s["families"].items()} == expected
    assert sorted(s["unconfirmed_candidates"]) == sorted(unconfirmed)
    printed = capsys.readouterr().out
    if unconfirmed:  # it says how to confirm them, with this target
        assert "python -m study confirm --study-name" in printed
        assert f"{option} {target:g}" in printed
    assert stored(reported_study).user_attrs == before  # nothing trained, nothing stored


def test_the_report_folder_is_as_readable_as_the_users_other_files(reported_study):
    """Built in a staging folder and renamed into place, the report keeps the mode the user's
    umask gives new folders (a temporary folder's 0700 would make it private)."""
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    assert reported_study.folder.stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_topk_study_runs_confirms_and_reports_beside_a_penalty_family(tiny_npz, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    where = [
        "--study-name",
        "k",
        "--storage",
        f"journal:{tmp_path / 'j.log'}",
        "--tracking-uri",
        uri,
    ]
    assert (
        main(
            [
                "run",
                "--family",
                "topk",
                "sparse_kl",
                "--data",
                tiny_npz,
                "--epochs",
                "2",
                "--n-trials",
                "6",
                "--pruner",
                "none",
                "--target-l0",
                "32",
                "--confirm-top",
                "1",
                "--confirm-seeds",
                "2",
                "--set",
                "train.batch_size=64",
                *where,
            ]
        )
        == 0
    )
    folder = tmp_path / "report"
    assert main(["report", *where, "--out", str(folder)]) == 0
    study = optuna.load_study(study_name="k", storage=open_storage(f"journal:{tmp_path / 'j.log'}"))
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    topk = [t for t in trials if t.params["model.family"] == "topk"]
    assert len(topk) == 3  # the families take turns
    client = MlflowClient(uri)
    for t in topk:  # what Optuna and MLflow stored: k searched, L0 at most k
        k = t.params["model.k"]
        assert set(t.params) == {"model.family", "model.k", "train.learning_rate"}
        assert 1 <= k <= 32 and t.user_attrs["config"]["model.k"] == k
        assert t.user_attrs["val_l0"] <= k and t.user_attrs["test_l0"] <= k
        assert client.get_run(t.user_attrs["mlflow_run_id"]).data.params["model.k"] == str(k)
    s = json.loads((folder / "summary.json").read_text())
    assert set(s["families"]) == {"topk", "sparse_kl"}  # each confirmed on the fresh seeds
    for w in s["families"].values():
        assert w["confirmed"]["seeds"] == [1, 2]
        assert study.user_attrs[f"confirmed:{w['trial']}"]["seeds"] == [1, 2]
    md = (folder / "report.md").read_text()
    assert "## Structural sparsity: topk beside the penalty families" in md
    sentence = structural.l0_sentence(trials, ["topk", "sparse_kl"], 32)
    assert (sentence or "No topk trial completed with L0 at or below 2, 4, 8") in md
    assert "figures/slice_topk.png" in md
    # the frontier draws topk's trials and front beside sparse_kl's, on both axes
    fig = plots.frontier(trials, Constraint("l0", 32.0), 0.1, {}, tmp_path / "frontier.png")
    for ax in fig.axes:
        labels = [line.get_label() for line in ax.get_lines()]
        assert "topk (3 trials)" in labels and "sparse_kl (3 trials)" in labels

    # the same trials under a mean-activation target: the report says how topk compares, why
    other = tmp_path / "other"
    assert main(["report", *where, "--target", "0.05", "--out", str(other)]) == 0
    md = (other / "report.md").read_text()
    acts = sorted(t.user_attrs["val_mean_activation"] for t in topk)
    rest = sorted(t.user_attrs["val_mean_activation"] for t in trials if t not in topk)
    met = sum(a <= 0.05 for a in acts)
    assert (
        f"topk is measured on a scale that is not its own: its 3 completed trials have a "
        f"median validation mean activation of {acts[1]:.4f}, and {met} of them meet the "
        f"target; the penalty families' trials, {rest[1]:.4f}. Why:"
    ) in md
    assert "decoder column is held at norm 1 (RMS 0.036 over the 784 pixels)" in md
