"""Packed training: every slot is the trial trained alone, which is the plain Keras model."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from experiments import models
from experiments.packed import PackedTrainer, PackError
from experiments.runner import final_measures
from experiments.slots import Rows
from experiments.train import evaluate_split
from tests.conftest import tiny

EPOCHS = 3
# one trial per family, with every penalty switched on (topk: its k) and its own learning rate
TRIALS = [
    tiny(
        "sparse_l1", **{"model.l1": 1e-3, "model.weight_decay": 1e-3, "train.learning_rate": 3e-3}
    ),
    tiny(
        "sparse_kl",
        **{
            "model.beta": 0.5,
            "model.p": 0.1,
            "model.weight_decay": 3e-3,
            "train.learning_rate": 1e-3,
        },
    ),
    tiny(
        "ncae",
        **{"model.beta": 0.05, "model.p": 0.02, "model.alpha": 0.03, "train.learning_rate": 1e-2},
    ),
    tiny("ae", **{"train.learning_rate": 5e-3}),
    # beside the others at the default decoder_norm, 28: topk's columns stay at unit norm
    tiny("topk", **{"model.k": 5, "model.decoder_norm": 28.0, "train.learning_rate": 1e-3}),
]
TRIALS = [cfg.replace(**{"train.epochs": EPOCHS, "name": cfg.name}) for cfg in TRIALS]
# the rest of the config space that --set reaches: every loss, optimizer, code activation,
# penalty layers, KL reduction and a decoder bound, each at least once
SETTINGS = {
    "half_sse, both layers, KL mean, decoder bound": tiny(
        "sparse_kl",
        **{
            "train.loss": "half_sse",
            "model.penalty_layers": "both",
            "model.kl_reduction": "mean",
            "model.decoder_norm": 1.0,
            "model.beta": 0.5,
            "model.p": 0.1,
            "model.weight_decay": 3e-3,
            "train.learning_rate": 1e-2,
        },
    ),
    "bce, sigmoid codes, both layers, adadelta": tiny(
        "ncae",
        **{
            "train.loss": "bce",
            "model.activation": "sigmoid",
            "model.penalty_layers": "both",
            "train.optimizer": "adadelta",
            "train.learning_rate": 1.0,
            "model.beta": 0.05,
            "model.p": 0.02,
            "model.alpha": 0.03,
        },
    ),
    "bce, adadelta, decoder bound, both layers": tiny(
        "sparse_l1",
        **{
            "train.loss": "bce",
            "train.optimizer": "adadelta",
            "train.learning_rate": 1.0,
            "model.decoder_norm": 0.5,
            "model.l1": 1e-3,
            "model.weight_decay": 1e-3,
            "model.penalty_layers": "both",
        },
    ),
    "topk, k 1, decoder_norm 0": tiny("topk", **{"model.k": 1, "model.decoder_norm": 0.0}),
    "half_sse, sigmoid codes, KL mean": tiny(
        "sparse_kl",
        **{
            "train.loss": "half_sse",
            "model.activation": "sigmoid",
            "model.kl_reduction": "mean",
            "model.beta": 3.0,
            "model.p": 0.05,
            "train.learning_rate": 3e-3,
        },
    ),
}
CONFIGS = {
    **{cfg.name: cfg for cfg in TRIALS},
    **{
        name: cfg.replace(**{"train.epochs": EPOCHS, "name": cfg.name})
        for name, cfg in SETTINGS.items()
    },
}
MEASURES = ("val_mse", "val_mean_activation", "val_active_fraction", "val_hoyer", "val_dead_units")


def train(trials, data, slots=None, schedule=None, exported=None):
    """Per trial index, its per-epoch values; ``schedule`` maps (slot, epoch) -> trial index to
    put into that slot after that epoch (a refill, once). ``exported``, a dict, receives each
    trial's model after its last epoch."""
    schedule = dict(schedule or {})
    trainer = PackedTrainer(
        trials[0], data, slots or len(trials), topk=any(t.model.family == "topk" for t in trials)
    )
    where = {}
    for slot, i in enumerate(range(slots or len(trials))):
        trainer.assign(slot, trials[i])
        where[slot] = i
    seen: dict[int, list[dict]] = {}

    def on_epoch(results):
        for slot, (epoch, values) in results.items():
            seen.setdefault(where[slot], []).append(values)
            if exported is not None and epoch == trials[where[slot]].train.epochs:
                exported[where[slot]] = trainer.export(slot)
            nxt = schedule.pop((slot, epoch), None)
            if nxt is not None:
                trainer.assign(slot, trials[nxt])
                where[slot] = nxt

    trainer.run(on_epoch)
    return seen, trainer


def plain_fit(cfg, data):
    """The notebooks' way, on the same batches: the plain model with the loss, optimizer, penalties
    and constraint ``models.build`` gives it, Keras fit, eager, one step at a time; per epoch
    its loss and validation measures (the VAE's path, experiments/train.py)."""
    model = models.build(cfg)
    model.compile(
        optimizer=model.optimizer,
        loss=model.loss,
        jit_compile=False,
        steps_per_execution=1,
        run_eagerly=True,
    )
    stream = np.random.default_rng(cfg.train.seed)  # the packed trainer's batch order
    epochs = []
    for _ in range(cfg.train.epochs):
        x = data.x_train[stream.permutation(len(data.x_train))]
        logs = model.fit(x, x, batch_size=cfg.train.batch_size, shuffle=False, verbose=0)
        epochs.append(
            {"loss": logs.history["loss"][0], **evaluate_split(model, data.x_val, "val", bce=False)}
        )
    return epochs, model


@pytest.mark.parametrize("name", CONFIGS)
def test_compiled_slot_is_the_plain_keras_model(name, tiny_data):
    cfg = CONFIGS[name]
    # beside it in the pack, another trial of the same settings: its own seed and learning rate
    neighbour = cfg.replace(**{"train.seed": 1, "train.learning_rate": 3 * cfg.train.learning_rate})
    exported = {}
    seen, trainer = train([cfg, neighbour], tiny_data, exported=exported)
    expected, plain = plain_fit(cfg, tiny_data)
    np.testing.assert_allclose(
        [v["loss"] for v in seen[0]], [v["loss"] for v in expected], rtol=1e-4
    )
    for key in MEASURES:
        np.testing.assert_allclose(
            [v[key] for v in seen[0]], [v[key] for v in expected], rtol=1e-4, atol=1e-6, err_msg=key
        )
    for got, want, layer in zip(
        exported[0].get_weights(),
        plain.get_weights(),
        ("encoder kernel", "encoder bias", "decoder kernel", "decoder bias"),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5, err_msg=layer)
    kernel = np.asarray(exported[0].get_layer("decoder").get_layer("reconstruction").kernel)
    if "decoder bound" in name:  # it binds: without it these rows grow past it
        assert np.linalg.norm(kernel, axis=1).max() == pytest.approx(
            cfg.model.decoder_norm, rel=1e-5
        )
    if cfg.model.family == "topk":  # every row exactly at unit norm, in the slot as alone
        np.testing.assert_allclose(np.linalg.norm(kernel, axis=1), 1.0, rtol=1e-5)
    assert trainer.busy() == []  # released after its epochs


def test_each_slot_of_a_pack_follows_its_trial_alone(tiny_data):
    packed, _ = train(TRIALS, tiny_data)
    for i, cfg in enumerate(TRIALS):
        alone, _ = train([cfg], tiny_data)
        for key in ("loss", "mse", "val_mse", "val_mean_activation", "val_active_fraction"):
            np.testing.assert_allclose(
                [v[key] for v in packed[i]],
                [v[key] for v in alone[0]],
                rtol=1e-4,
                atol=1e-7,
                err_msg=f"trial {i} {key}",
            )


def test_a_topk_slot_and_a_sparse_kl_slot_share_a_pack_at_the_default_decoder_norm(tiny_data):
    # one study's decoder_norm (28) for both: topk's columns held at 1, sparse_kl's bounded by 28
    topk = tiny("topk", **{"model.k": 4, "train.learning_rate": 1e-2, "train.epochs": 4})
    kl = tiny(
        "sparse_kl",
        **{"model.beta": 0.01, "model.p": 0.05, "train.learning_rate": 3e-2, "train.epochs": 4},
    )
    assert topk.model.decoder_norm == kl.model.decoder_norm == 28.0
    exported = {}
    seen, _ = train([topk, kl], tiny_data, exported=exported)
    norms = [np.linalg.norm(models.decoder_kernel(exported[i]), axis=1) for i in (0, 1)]
    np.testing.assert_allclose(norms[0], 1.0, rtol=1e-5)
    assert norms[1].max() <= 28.0 * (1 + 1e-5) and np.ptp(norms[1]) > 0.1  # not held at 1
    assert 0 < seen[0][-1]["val_l0"] <= 4  # topk's code is alive ...
    assert seen[0][-1]["val_mse"] < seen[0][0]["val_mse"]  # ... and learns


def test_a_refilled_slot_trains_as_if_alone(tiny_data):
    # trial 0 is stopped after one epoch (pruned) and trial 2 takes its slot; trial 1 runs on
    trials = [TRIALS[0], TRIALS[1], TRIALS[2]]
    packed, trainer = train(trials, tiny_data, slots=2, schedule={(0, 1): 2})
    assert len(packed[0]) == 1 and len(packed[1]) == EPOCHS and len(packed[2]) == EPOCHS
    for i in (1, 2):
        alone, _ = train([trials[i]], tiny_data)
        np.testing.assert_allclose(
            [v["loss"] for v in packed[i]], [v["loss"] for v in alone[0]], rtol=1e-4
        )


def test_rows_are_written_together_and_the_last_value_of_a_row_wins():
    variable = keras.Variable(np.zeros((3, 2), "float32"))
    rows = Rows()
    rows.set(variable, 0, 1.0)
    rows.set(variable, 2, [4.0, 5.0])
    rows.set(variable, 0, 2.0)  # a freed slot given a new trial
    assert not np.any(keras.ops.convert_to_numpy(variable))  # nothing written yet
    rows.write()
    assert keras.ops.convert_to_numpy(variable).tolist() == [[2, 2], [0, 0], [4, 5]]
    rows.write()  # nothing left to write: the variable as it is
    assert keras.ops.convert_to_numpy(variable).tolist() == [[2, 2], [0, 0], [4, 5]]


def test_export_is_the_plain_model_with_the_slots_weights(tiny_data):
    cfg = TRIALS[1]
    trainer = PackedTrainer(cfg, tiny_data, 2)
    trainer.assign(1, cfg)
    plain = trainer.export(1)
    start = models.build(cfg)  # before training a slot holds the plain model's initial weights
    for got, want in zip(plain.get_weights(), start.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    exported = []
    trainer.run(lambda results: exported.append((trainer.export(1), results[1][1])))
    model, values = exported[0]
    x = tiny_data.x_val
    reconstruction = models.decode(model, models.encode(model, x))
    assert np.mean((reconstruction - x) ** 2) == pytest.approx(values["val_mse"], rel=1e-5)


def test_final_measures_in_the_pack_are_the_exported_models(tiny_data):
    # a study's trial is measured in its pack; its record must say what its saved model does
    trainer = PackedTrainer(TRIALS[0], tiny_data, len(TRIALS), topk=True)
    for slot, cfg in enumerate(TRIALS):
        trainer.assign(slot, cfg)
    got = {}

    def on_epoch(results):
        if all(epoch == EPOCHS for epoch, _ in results.values()):
            finals = trainer.final_measures(results)
            got.update(
                {
                    slot: (finals[slot], final_measures(trainer.export(slot), tiny_data))
                    for slot in results
                }
            )

    trainer.run(on_epoch)
    assert sorted(got) == list(range(len(TRIALS)))
    for slot, (packed, plain) in got.items():
        assert {"val_mse", "test_bce", "test_l0", "decoder_norm_max"} <= plain.keys()
        assert packed.keys() == plain.keys()
        for key, want in plain.items():
            assert packed[key] == pytest.approx(want, rel=1e-5, abs=1e-7), (TRIALS[slot].name, key)


def test_a_diverging_slot_leaves_the_others_alone(tiny_data):
    bad = TRIALS[1].replace(**{"train.learning_rate": 1e20})
    packed, _ = train([bad, TRIALS[1]], tiny_data)
    alone, _ = train([TRIALS[1]], tiny_data)
    assert not np.isfinite(packed[0][-1]["loss"])
    np.testing.assert_allclose(
        [v["loss"] for v in packed[1]], [v["loss"] for v in alone[0]], rtol=1e-4
    )


def test_only_slot_values_may_differ_within_a_pack(tiny_data):
    trainer = PackedTrainer(TRIALS[0], tiny_data, 2)
    with pytest.raises(PackError, match="model.latent=8 differs"):
        trainer.assign(0, TRIALS[0].replace(**{"model.latent": 8}))
    with pytest.raises(PackError, match="VAE"):
        PackedTrainer(tiny("vae"), tiny_data, 1)


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_a_study_keeps_what_it_compiled_on_disk(backend, tiny_npz, tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("JAX_COMPILATION_CACHE_DIR", "TF_XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL")
    }
    env |= {"KERAS_BACKEND": backend, "XDG_CACHE_HOME": str(tmp_path)}
    study = [
        *("run --family sparse_kl --epochs 1 --pruner none --n-trials 1 --pack 1".split()),
        *("--no-tracking --confirm-seeds 0 --set train.batch_size=64".split()),
        *("--data", tiny_npz, "--storage", f"journal:{tmp_path / 'j.log'}"),
    ]
    subprocess.run(
        [sys.executable, "-m", "study", *study], env=env, capture_output=True, check=True
    )
    # the step and the measures; TensorFlow's in a folder of its version
    (cache,) = (tmp_path / "sae-study").glob(f"{backend}*")
    assert len(list(cache.iterdir())) >= 2
    if backend == "tensorflow":  # a study that finds them there says nothing about it
        again = subprocess.run(
            [sys.executable, "-m", "study", *study], env=env, capture_output=True, check=True
        )
        assert "E0000" not in again.stderr.decode(), again.stderr.decode()[-2000:]
