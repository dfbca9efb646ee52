"""The experiments command line, asserted through what MLflow stored."""

import json
from pathlib import Path

import keras
import pytest
from mlflow import MlflowClient

from experiments.cli import EXPERIMENT, main

FAST = ["--epochs", "2", "--set", "train.batch_size=64"]


def runs(uri):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client, client.search_runs([exp.experiment_id], order_by=["attributes.start_time"])


def artifact_paths(client, run_id, path=None):
    out = []
    for f in client.list_artifacts(run_id, path):
        out += artifact_paths(client, run_id, f.path) if f.is_dir else [f.path]
    return out


@pytest.mark.parametrize("name", ["vae", "sparse_kl_wd"])
def test_run_records_params_metrics_figures_model_config_history(
    name, tiny_npz, tracking_uri, capsys
):
    assert main(["run", name, "--data", tiny_npz, *FAST]) == 0
    client, found = runs(tracking_uri)
    assert len(found) == 1
    run = found[0]
    assert run.info.status == "FINISHED" and run.info.run_name == name
    assert run.data.params["model.family"] == ("vae" if name == "vae" else "sparse_kl")
    assert run.data.params["train.epochs"] == "2"
    assert run.data.tags["data.name"] == tiny_npz
    assert len(run.data.tags["data.hash"]) == 12
    assert run.data.tags["data.n_train"] == "320" and run.data.tags["data.n_test"] == "200"
    assert run.data.tags["backend"] == keras.backend.backend() and run.data.tags["git_commit"]
    history = client.get_metric_history(run.info.run_id, "val_mse")
    assert [m.step for m in history] == [1, 2]
    assert {"test_mse", "test_mean_activation", "val_mean_activation", "loss"} <= set(
        run.data.metrics
    )
    files = artifact_paths(client, run.info.run_id)
    expected = {
        "config.json",
        "history.csv",
        "model/model.keras",
        "figures/reconstruction.png",
        "figures/receptive_fields.png",
        "figures/digit_counts.png",
        "figures/latent_scatter.png",
    }
    expected |= (
        {"figures/latent_sweep.png", "figures/occupancy.png", "occupancy.json"}
        if name == "vae"
        else {"figures/tsne.png", "figures/interpolation.png", "figures/activations.png"}
    )
    assert expected <= set(files)
    assert "val_mse=" in capsys.readouterr().out


def test_saved_config_reproduces_the_run(tiny_npz, tracking_uri, tmp_path):
    assert main(["run", "sparse_l1", "--data", tiny_npz, *FAST]) == 0
    client, (first,) = runs(tracking_uri)
    config = Path(client.download_artifacts(first.info.run_id, "config.json", str(tmp_path)))
    assert json.loads(config.read_text())["model.l1"] == 1e-7
    assert main(["run", "--config", str(config)]) == 0
    _, (a, b) = runs(tracking_uri)
    assert a.data.params == b.data.params
    assert a.data.metrics["test_mse"] == pytest.approx(b.data.metrics["test_mse"], rel=1e-6)


def test_list_shows_every_experiment(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("vae", "ae", "sparse_l1", "sparse_kl", "sparse_kl_wd", "ncae"):
        assert f"\n{name} " in "\n" + out
    assert "model.weight_decay=0.006" in out
