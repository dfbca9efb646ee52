"""What the run of a finished trial holds, read back through MlflowClient.

The lists below are written out by hand, not taken from the code that logs them: they are the
record a COMPLETE trial has always had (per-epoch metrics, final measures, tags, params, figures,
model, config, history), so a change that makes tracking cheaper by leaving something out fails
here.
"""

import csv
import io
import json
import re

import keras
import numpy as np
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from PIL import Image

from experiments.presets import DEFAULT
from experiments.train import evaluate_split
from study.objective import StudySpec
from study.search import run_study

EPOCHS = 3
MEASURES = (
    "mse",
    "fvu",
    "mean_activation",
    "raw_activation",
    "l0",
    "active_fraction",
    "hoyer",
    "dead_units",
)
# logged after every epoch, steps 1..EPOCHS
EPOCH_METRICS = {"loss", "mse", *(f"val_{m}" for m in MEASURES)}
# logged once, at step EPOCHS, after training
FINAL_METRICS = {
    "val_bce",
    *(f"test_{m}" for m in (*MEASURES, "bce")),
    "decoder_norm_median",
    "decoder_norm_max",
    "train_seconds",
    "constraint",
}
ARTIFACTS = {
    "figures/reconstruction.png",
    "figures/receptive_fields.png",
    "figures/activations.png",
    "figures/latent_scatter.png",
    "config.json",
    "history.csv",
    "model/model.keras",
}
TAGS = {
    "family",
    "backend",
    "data.name",
    "data.hash",
    "data.n_train",
    "data.n_val",
    "data.n_test",
    "study",
    "trial",
    "state",
    "feasible",
    "recorded",
    "mlflow.runName",
    "mlflow.parentRunId",
}


def _files(client, run_id, folder=None):
    out = {}
    for f in client.list_artifacts(run_id, folder):
        out.update(_files(client, run_id, f.path) if f.is_dir else {f.path: f.file_size})
    return out


@pytest.fixture(scope="module")
def tracked_study(tiny_data, tmp_path_factory):
    """Three trials of two families trained as one pack, every one COMPLETE, with tracking."""
    folder = tmp_path_factory.mktemp("record")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    base = DEFAULT.replace(**{"name": "study", "train.epochs": EPOCHS, "train.batch_size": 64})
    spec = StudySpec("record", ("sparse_kl", "ncae"), 0.05, base, "none")
    out = run_study(
        spec,
        tiny_data,
        f"journal:{folder / 'j.log'}",
        n_trials=3,
        tracking_uri=uri,
        progress=False,
        pack=3,
    )
    assert [t.state for t in out.trials] == [TrialState.COMPLETE] * 3
    return out, MlflowClient(uri), folder


def test_every_finished_trial_holds_its_whole_record(tracked_study, tiny_data):
    out, client, folder = tracked_study
    for trial in out.trials:
        run_id = trial.user_attrs["mlflow_run_id"]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"

        # params: the whole flat config
        config = trial.user_attrs["config"]
        assert run.data.params == {k: str(v) for k, v in config.items()}

        # tags
        tags = run.data.tags
        assert TAGS <= set(tags)
        assert (tags["state"], tags["recorded"], tags["trial"]) == (
            "COMPLETE",
            "true",
            str(trial.number),
        )
        assert tags["feasible"] == str(trial.constraints["mean_activation"] <= 0).lower()
        assert tags["family"] == trial.params["model.family"]
        assert tags["data.hash"] == tiny_data.content_hash
        assert tags["backend"] == keras.backend.backend()

        # per-epoch metrics, every epoch, and the final ones once
        assert EPOCH_METRICS | FINAL_METRICS == set(run.data.metrics)
        histories = {}
        for key in EPOCH_METRICS:
            history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            assert [s for s, _ in history] == list(range(1, EPOCHS + 1)), key
            histories[key] = [v for _, v in history]
        assert histories["val_mse"][-1] == pytest.approx(trial.value, rel=1e-6)
        for key in FINAL_METRICS:
            history = client.get_metric_history(run_id, key)
            assert [m.step for m in history] == [EPOCHS], key
        for key in FINAL_METRICS - {"constraint", "train_seconds"}:
            assert run.data.metrics[key] == pytest.approx(trial.user_attrs[key], rel=1e-6), key
        assert run.data.metrics["constraint"] == pytest.approx(
            trial.constraints["mean_activation"], rel=1e-6
        )

        # artefacts: every file, each one readable and holding what it should
        files = _files(client, run_id)
        assert set(files) == ARTIFACTS
        local = folder / "download" / run_id
        client.download_artifacts(run_id, "", str(local))
        for path in ARTIFACTS:
            if path.endswith(".png"):
                with Image.open(local / path) as image:
                    pixels = np.asarray(image)
                assert min(pixels.shape[:2]) >= 28 and pixels.std() > 0, path  # not blank
        assert json.loads((local / "config.json").read_text()) == config
        rows = list(csv.DictReader(io.StringIO((local / "history.csv").read_text())))
        assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
        for key in EPOCH_METRICS:
            np.testing.assert_allclose(
                [float(r[key]) for r in rows], histories[key], rtol=1e-6, err_msg=key
            )
        model = keras.saving.load_model(local / "model" / "model.keras")
        again = evaluate_split(model, tiny_data.x_test, "test")
        assert again["test_mse"] == pytest.approx(trial.user_attrs["test_mse"], rel=1e-5)


def test_the_report_draws_the_charts_of_an_unconfirmed_trial_from_its_saved_model(tracked_study):
    # the trial's run holds bare pictures; where a person looks, the report, gets the charts
    from study.cli import main

    out, client, folder = tracked_study
    report = folder / "report"
    assert (
        main(
            [
                "report",
                "--study-name",
                "record",
                "--storage",
                f"journal:{folder / 'j.log'}",
                "--tracking-uri",
                client.tracking_uri,
                "--target",
                "1.0",
                "--out",
                str(report),
            ]
        )
        == 0
    )
    md = (report / "report.md").read_text()
    shown = re.search(r"drawn from the model saved in its MLflow run `(\w+)`", md)[1]
    assert shown in {t.user_attrs["mlflow_run_id"] for t in out.trials}
    picture = client.download_artifacts(shown, "figures/activations.png", str(folder / "pic"))
    with (
        Image.open(report / "figures" / "best_activations.png") as chart,
        Image.open(picture) as bare,
    ):
        assert chart.size != bare.size  # a matplotlib chart, not the run's picture
