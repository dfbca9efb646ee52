"""Models: every family trains, reports the metric contract, repeats under a seed, reloads."""

import random
import re
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

from experiments import models
from experiments.runner import train_and_evaluate
from experiments.train import evaluate_split
from study.results import DEFAULT_MEASURE, DEFAULT_TARGET, Constraint
from tests.conftest import tiny

FAMILIES = ["vae", "ae", "sparse_l1", "sparse_kl", "ncae", "topk"]


@pytest.mark.parametrize("name", FAMILIES)
def test_family_trains_and_reports_per_epoch_metrics(name, tiny_data):
    seen = []
    result = train_and_evaluate(tiny(name), tiny_data, on_epoch=[lambda e, m: seen.append(e)])
    assert seen == [1, 2]
    expected = {
        "loss",
        "mse",
        "val_mse",
        "val_mean_activation",
        "val_active_fraction",
        "val_hoyer",
        "val_dead_units",
    }
    if name == "vae":
        expected |= {"reconstruction_loss", "kl_loss"}
    assert expected <= set(result.history)
    assert all(len(v) == 2 for v in result.history.values())
    assert {
        "test_mse",
        "test_mean_activation",
        "val_mse",
        "val_bce",
        "test_bce",
        "train_seconds",
    } <= set(result.final)
    assert 0 < result.final["test_mse"] < 0.3


def test_same_seed_same_run_different_seed_different_run(tiny_data):
    a = train_and_evaluate(tiny("sparse_kl"), tiny_data)
    b = train_and_evaluate(tiny("sparse_kl"), tiny_data)
    c = train_and_evaluate(tiny("sparse_kl", **{"train.seed": 1}), tiny_data)
    assert a.history["val_mse"] == b.history["val_mse"]
    assert a.history["val_mse"] != c.history["val_mse"]


@pytest.mark.parametrize("name", ["vae", "sparse_kl"])
def test_build_neither_reads_nor_changes_the_process_random_state(name):
    random.seed(5)
    np.random.seed(5)
    first = models.build(tiny(name)).get_weights()
    assert random.random() == random.Random(5).random()  # the draw it would have made first
    assert np.random.random() == np.random.RandomState(5).random_sample()
    random.seed(6)
    np.random.seed(6)
    again = models.build(tiny(name)).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other = models.build(tiny(name, **{"train.seed": 1})).get_weights()
    assert not np.array_equal(first[0], other[0])


def test_initial_weights_follow_the_seed_and_the_family_alone():
    """A pack draws them once per (seed, family): the penalties and the learning rate must not
    change them; topk starts its decoder columns at unit norm."""
    kl = models.initial_weights(tiny("sparse_kl"))
    other_penalties = models.initial_weights(
        tiny("sparse_kl", **{"model.beta": 0.5, "model.p": 0.2, "train.learning_rate": 0.1})
    )
    assert all(np.array_equal(a, b) for a, b in zip(kl, other_penalties, strict=True))
    assert not np.array_equal(
        kl[0], models.initial_weights(tiny("sparse_kl", **{"train.seed": 1}))[0]
    )
    topk = models.initial_weights(tiny("topk"))
    np.testing.assert_array_equal(topk[0], kl[0])
    np.testing.assert_allclose(np.linalg.norm(topk[2], axis=1), 1.0, rtol=1e-5)
    assert [w.shape for w in kl] == [w.shape for w in models.build(tiny("sparse_kl")).get_weights()]


def test_vae_loss_is_summed_bce_plus_summed_kl():
    model = models.build(tiny("vae"))
    rng = np.random.default_rng(0)
    x = rng.random((3, 784)).astype("float32")
    x_hat = rng.uniform(0.1, 0.9, (3, 784)).astype("float32")
    mean = rng.normal(size=(3, 2)).astype("float32")
    log_var = rng.normal(size=(3, 2)).astype("float32")
    bce = -(x * np.log(x_hat) + (1 - x) * np.log(1 - x_hat)).sum(axis=1).mean()
    kl = (-0.5 * (1 + log_var - mean**2 - np.exp(log_var)).sum(axis=1)).mean()
    got = float(ops.convert_to_numpy(model.compute_loss(x=x, y_pred=(x_hat, mean, log_var))))
    assert got == pytest.approx(bce + kl, rel=1e-4)


def test_vae_sampling_draws_from_mean_and_variance():
    # z = mean + exp(log_variance / 2) · eps: many draws have mean ``mean`` and variance
    # exp(log_variance); exp(log_variance) · eps (the blog's log_sigma confusion) has exp(2·lv)
    n = 20000
    mean = np.array([-1.0, 0.0, 2.0], "float32")
    log_variance = np.array([-2.0, 0.0, 1.5], "float32")
    sampling = models.build(tiny("vae", **{"model.latent": 3})).sampling
    z = ops.convert_to_numpy(sampling([np.tile(mean, (n, 1)), np.tile(log_variance, (n, 1))]))
    variance = np.exp(log_variance)
    np.testing.assert_allclose(z.mean(axis=0), mean, atol=5 * np.sqrt(variance / n).max())
    np.testing.assert_allclose(z.var(axis=0), variance, rtol=5 * np.sqrt(2 / n))
    again = ops.convert_to_numpy(sampling([np.tile(mean, (n, 1)), np.tile(log_variance, (n, 1))]))
    assert not np.allclose(again, z)  # a fresh draw each call


@pytest.mark.parametrize("name", ["vae", "sparse_kl_wd", "ncae", "topk"])
def test_saved_model_reloads_in_safe_mode(name, tmp_path):
    model = models.build(tiny(name))
    x = np.random.default_rng(0).random((5, 784)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(models.encode(again, x), models.encode(model, x), rtol=1e-6)
    np.testing.assert_allclose(
        models.decode(again, models.encode(again, x)),
        models.decode(model, models.encode(model, x)),
        rtol=1e-6,
    )


def test_no_source_unpickles_what_it_reads():
    # models are .keras files loaded in safe mode, data .npz read without pickle
    root = Path(__file__).resolve().parents[1]
    risky = re.compile(
        r"\bimport pickle|\bpickle\.load|allow_pickle\s*=\s*True|"
        r"safe_mode\s*=\s*False|\bjoblib\.load|\bdill\b"
    )
    found = [
        f"{p.relative_to(root)}:{n}"
        for package in ("experiments", "study", "tracking")
        for p in sorted((root / package).glob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if risky.search(line)
    ]
    assert found == []


def test_diverging_training_raises(tiny_data):
    from experiments.train import TrainingDiverged

    cfg = tiny("sparse_kl_wd", **{"train.learning_rate": 1e20})  # weight decay overflows
    with pytest.raises(TrainingDiverged, match="became"):
        train_and_evaluate(cfg, tiny_data)


def test_half_sse_is_ngs_reconstruction_term():
    model = models.build(tiny("sparse_kl", **{"train.loss": "half_sse"}))
    rng = np.random.default_rng(0)
    x, x_hat = rng.random((4, 784)).astype("float32"), rng.random((4, 784)).astype("float32")
    # per sample, then Keras averages over the batch
    got = float(np.mean(ops.convert_to_numpy(model.loss(x, x_hat))))
    assert got == pytest.approx(0.5 * np.square(x - x_hat).sum(axis=1).mean(), rel=1e-5)


def test_decoder_norm_bounds_each_code_units_decoder_weights(tiny_data):
    result = train_and_evaluate(
        tiny("sparse_kl", **{"model.decoder_norm": 0.5, "train.learning_rate": 0.05}), tiny_data
    )
    kernel = np.asarray(result.model.get_layer("decoder").get_layer("reconstruction").kernel)
    assert kernel.shape == (32, 784)
    assert np.linalg.norm(kernel, axis=1).max() <= 0.5 + 1e-5


def test_a_rescaled_dense_autoencoder_cannot_pass_as_sparse(tiny_data):
    # relu is positively homogeneous: the encoder times s and the decoder over s reconstruct
    # identically while the raw mean activation shrinks by s. The notebooks' measure is fooled;
    # the default constraint's, weighted by each unit's decoder column, is not
    model = train_and_evaluate(tiny("ae", **{"train.learning_rate": 3e-3}), tiny_data).model
    x = tiny_data.x_val
    before = evaluate_split(model, x, "val")
    default = Constraint(DEFAULT_MEASURE, DEFAULT_TARGET)
    assert not default.met(before)  # a dense code
    s = 0.5 * DEFAULT_TARGET / before["val_raw_activation"]
    enc = model.get_layer("encoder").get_layer("code")
    dec = model.get_layer("decoder").get_layer("reconstruction")
    k, b = enc.get_weights()
    enc.set_weights([k * s, b * s])
    k, b = dec.get_weights()
    dec.set_weights([k / s, b])
    after = evaluate_split(model, x, "val")
    assert after["val_mse"] == pytest.approx(before["val_mse"], rel=1e-4)
    assert Constraint("raw_activation", DEFAULT_TARGET).met(after)  # the loophole is real
    for key in ("val_mean_activation", "val_l0", "val_hoyer"):
        assert after[key] == pytest.approx(before[key], rel=1e-4), key
    assert not default.met(after)


def test_saving_twice_builds_no_reference_objects(tmp_path, monkeypatch):
    """models.save makes Keras's saving cache work (a private key of Keras 3: this test says
    when a Keras version changes it); the models saved load back the same."""
    from keras.src.layers.layer import Layer

    model = models.build(tiny("sparse_kl"))
    models.save(model, tmp_path / "a.keras")
    built = []
    original = Layer.__init__
    monkeypatch.setattr(
        Layer,
        "__init__",
        lambda self, *a, **k: (built.append(type(self)), original(self, *a, **k))[1],
    )
    models.save(model, tmp_path / "b.keras")
    assert Layer not in built  # no bare reference Layer() built to list attributes
    monkeypatch.undo()
    again = keras.saving.load_model(tmp_path / "b.keras")
    np.testing.assert_array_equal(again.get_weights()[0], model.get_weights()[0])
