"""Metrics against hand computations of the formulas in ANCHORS.md."""

import math

import numpy as np
import pytest

from experiments import metrics

CODES = np.array([[0.0, 2.0, 0.0, 0.0],     # one active unit
                  [1.0, 1.0, 1.0, 1.0],     # all equal
                  [0.0, 0.0, 0.0, 0.0],     # nothing active
                  [3.0, 4.0, 0.0, 0.0]])


def codes_only(codes):
    zeros = np.zeros((len(codes), 2))
    return metrics.summarize(zeros, zeros, codes)


def test_mse_and_bce():
    x = np.array([[0.0, 1.0], [1.0, 0.5]])
    x_hat = np.array([[0.5, 1.0], [0.75, 0.5]])
    s = metrics.summarize(x, x_hat, np.zeros((2, 3)))
    assert s["mse"] == pytest.approx((0.25 + 0 + 0.0625 + 0) / 4)
    expected = -(math.log(0.5) + math.log(1 - 1e-7) + math.log(0.75)
                 + 0.5 * math.log(0.5) + 0.5 * math.log(0.5)) / 4
    assert s["bce"] == pytest.approx(expected, rel=1e-6)


def test_mean_activation_active_fraction_dead_units():
    s = codes_only(CODES)
    assert s["mean_activation"] == pytest.approx((2 + 4 + 0 + 7) / 16)
    assert s["active_fraction"] == pytest.approx(7 / 16)
    assert s["dead_units"] == 0
    assert codes_only(CODES[:, [0, 2, 3]][[0, 2]])["dead_units"] == 3


def test_hoyer_sparseness():
    n = 4
    hand = [(math.sqrt(n) - 1) / (math.sqrt(n) - 1),           # one-hot: 1
            (math.sqrt(n) - 2) / (math.sqrt(n) - 1),           # uniform: 0
            1.0,                                               # zero code counts as sparse
            (math.sqrt(n) - 7 / 5) / (math.sqrt(n) - 1)]       # ‖·‖₁ = 7, ‖·‖₂ = 5
    assert codes_only(CODES)["hoyer"] == pytest.approx(np.mean(hand))
    assert math.isnan(codes_only(np.ones((3, 1)))["hoyer"])


def test_summarize_names_and_bce_on_request():
    x = np.random.default_rng(0).random((5, 784))
    codes = np.abs(np.random.default_rng(1).random((5, 8)))
    s = metrics.summarize(x, x, codes)
    assert set(s) == set(metrics.NAMES)
    assert s["mse"] == 0.0
    assert "bce" not in metrics.summarize(x, x, codes, bce=False)


def test_slots_and_chunks_agree_with_one_piece():
    # a packed model's outputs (slots, n, ·) give one value per slot, each equal to that slot
    # measured alone, and adding the split in chunks changes nothing
    rng = np.random.default_rng(2)
    x = rng.random((30, 784))
    x_hat = rng.random((3, 30, 784))
    codes = np.maximum(rng.normal(size=(3, 30, 5)), 0)
    codes[1, :, 2] = 0  # one dead unit in slot 1
    packed = metrics.Measures()
    for start in range(0, 30, 7):
        packed.add(x[start:start + 7], x_hat[:, start:start + 7], codes[:, start:start + 7])
    together = packed.result()
    for slot in range(3):
        alone = metrics.summarize(x, x_hat[slot], codes[slot])
        for key, value in alone.items():
            assert together[key][slot] == pytest.approx(value, rel=1e-5), key
    assert list(together["dead_units"]) == [0, 1, 0]
