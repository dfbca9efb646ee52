"""The study report in other cases: another target, no MLflow or feasible trial, a topk
family, bad input."""

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from test_report import FIGURES, figure_links, stored

from study.cli import main
from study.report import plots, structural
from study.results import SPEC_ATTR, Constraint
from study.storage import open_storage


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
