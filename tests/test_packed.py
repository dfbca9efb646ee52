"""Packed training: every slot is the trial trained alone, which is the plain Keras model."""

import keras
import numpy as np
import pytest

from experiments import models
from experiments.packed import PackedTrainer, PackError
from tests.conftest import tiny

EPOCHS = 3
# one trial per family, with every penalty switched on and its own learning rate
TRIALS = [
    tiny("sparse_l1", **{"model.l1": 1e-3, "model.weight_decay": 1e-3,
                         "train.learning_rate": 3e-3}),
    tiny("sparse_kl", **{"model.beta": 0.5, "model.p": 0.1, "model.weight_decay": 3e-3,
                         "train.learning_rate": 1e-3}),
    tiny("ncae", **{"model.beta": 0.05, "model.p": 0.02, "model.alpha": 0.03,
                    "train.learning_rate": 1e-2}),
    tiny("ae", **{"train.learning_rate": 5e-3}),
]
TRIALS = [cfg.replace(**{"train.epochs": EPOCHS, "name": cfg.name}) for cfg in TRIALS]


def train(trials, data, slots=None, schedule=None):
    """Per trial index, its per-epoch values; ``schedule`` maps (slot, epoch) -> trial index to
    put into that slot after that epoch (a refill, once)."""
    schedule = dict(schedule or {})
    trainer = PackedTrainer(trials[0], data, slots or len(trials))
    where = {}
    for slot, i in enumerate(range(slots or len(trials))):
        trainer.assign(slot, trials[i])
        where[slot] = i
    seen: dict[int, list[dict]] = {}

    def on_epoch(results):
        for slot, (epoch, values) in results.items():
            seen.setdefault(where[slot], []).append(values)
            nxt = schedule.pop((slot, epoch), None)
            if nxt is not None:
                trainer.assign(slot, trials[nxt])
                where[slot] = nxt

    trainer.run(on_epoch)
    return seen, trainer


def plain_losses(cfg, data):
    """The seed's way, on the same batches: the plain model, Keras fit, eager, one step at a time."""
    model = models.build(cfg)
    model.compile(optimizer=keras.optimizers.Adam(cfg.train.learning_rate),
                  loss=keras.losses.MeanSquaredError(),
                  metrics=[keras.metrics.MeanSquaredError(name="mse")],
                  jit_compile=False, steps_per_execution=1, run_eagerly=True)
    stream = np.random.default_rng(cfg.train.seed)  # the packed trainer's batch order
    losses = []
    for _ in range(cfg.train.epochs):
        x = data.x_train[stream.permutation(len(data.x_train))]
        logs = model.fit(x, x, batch_size=cfg.train.batch_size, shuffle=False, verbose=0)
        losses.append(logs.history["loss"][0])
    return losses, model


@pytest.mark.parametrize("index", range(len(TRIALS)))
def test_compiled_slot_follows_the_plain_keras_path(index, tiny_data):
    cfg = TRIALS[index]
    seen, trainer = train([cfg], tiny_data)
    expected, plain = plain_losses(cfg, tiny_data)
    np.testing.assert_allclose([v["loss"] for v in seen[0]], expected, rtol=1e-4)
    assert trainer.busy() == []  # released after its epochs


def test_each_slot_of_a_pack_follows_its_trial_alone(tiny_data):
    packed, _ = train(TRIALS, tiny_data)
    for i, cfg in enumerate(TRIALS):
        alone, _ = train([cfg], tiny_data)
        for key in ("loss", "mse", "val_mse", "val_mean_activation", "val_active_fraction"):
            np.testing.assert_allclose([v[key] for v in packed[i]], [v[key] for v in alone[0]],
                                       rtol=1e-4, atol=1e-7, err_msg=f"trial {i} {key}")


def test_a_refilled_slot_trains_as_if_alone(tiny_data):
    # trial 0 is stopped after one epoch (pruned) and trial 2 takes its slot; trial 1 runs on
    trials = [TRIALS[0], TRIALS[1], TRIALS[2]]
    packed, trainer = train(trials, tiny_data, slots=2, schedule={(0, 1): 2})
    assert len(packed[0]) == 1 and len(packed[1]) == EPOCHS and len(packed[2]) == EPOCHS
    for i in (1, 2):
        alone, _ = train([trials[i]], tiny_data)
        np.testing.assert_allclose([v["loss"] for v in packed[i]], [v["loss"] for v in alone[0]],
                                   rtol=1e-4)


def test_export_is_the_plain_model_with_the_slots_weights(tiny_data):
    cfg = TRIALS[1]
    trainer = PackedTrainer(cfg, tiny_data, 2)
    trainer.assign(1, cfg)
    plain = trainer.export(1)
    start = models.build(cfg)  # before training a slot holds the plain model's initial weights
    for got, want in zip(plain.get_weights(), start.get_weights()):
        np.testing.assert_array_equal(got, want)
    exported = []
    trainer.run(lambda results: exported.append((trainer.export(1), results[1][1])))
    model, values = exported[0]
    x = tiny_data.x_val
    reconstruction = models.decode(model, models.encode(model, x))
    assert np.mean((reconstruction - x) ** 2) == pytest.approx(values["val_mse"], rel=1e-5)


def test_a_diverging_slot_leaves_the_others_alone(tiny_data):
    bad = TRIALS[1].replace(**{"train.learning_rate": 1e20})
    packed, _ = train([bad, TRIALS[1]], tiny_data)
    alone, _ = train([TRIALS[1]], tiny_data)
    assert not np.isfinite(packed[0][-1]["loss"])
    np.testing.assert_allclose([v["loss"] for v in packed[1]], [v["loss"] for v in alone[0]],
                               rtol=1e-4)


def test_only_slot_values_may_differ_within_a_pack(tiny_data):
    trainer = PackedTrainer(TRIALS[0], tiny_data, 2)
    with pytest.raises(PackError, match="model.latent=8 differs"):
        trainer.assign(0, TRIALS[0].replace(**{"model.latent": 8}))
    with pytest.raises(PackError, match="VAE"):
        PackedTrainer(tiny("vae"), tiny_data, 1)
