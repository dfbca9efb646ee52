"""Metrics against hand computations of the formulas in ANCHORS.md."""

import math

import numpy as np
import pytest

from experiments import metrics

CODES = np.array([[0.0, 2.0, 0.0, 0.0],     # one active unit
                  [1.0, 1.0, 1.0, 1.0],     # all equal
                  [0.0, 0.0, 0.0, 0.0],     # nothing active
                  [3.0, 4.0, 0.0, 0.0]])


def test_mse_and_bce():
    x = np.array([[0.0, 1.0], [1.0, 0.5]])
    x_hat = np.array([[0.5, 1.0], [0.75, 0.5]])
    assert metrics.mse(x, x_hat) == pytest.approx((0.25 + 0 + 0.0625 + 0) / 4)
    expected = -(math.log(0.5) + math.log(1 - 1e-7) + math.log(0.75)
                 + 0.5 * math.log(0.5) + 0.5 * math.log(0.5)) / 4
    assert metrics.bce(x, x_hat) == pytest.approx(expected, rel=1e-6)


def test_mean_activation_active_fraction_dead_units():
    assert metrics.mean_activation(CODES) == pytest.approx((2 + 4 + 0 + 7) / 16)
    assert metrics.active_fraction(CODES) == pytest.approx(7 / 16)
    assert metrics.dead_units(CODES) == 0
    assert metrics.dead_units(CODES[:, [0, 2, 3]][[0, 2]]) == 3


def test_hoyer_sparseness():
    n = 4
    hand = [(math.sqrt(n) - 1) / (math.sqrt(n) - 1),           # one-hot: 1
            (math.sqrt(n) - 2) / (math.sqrt(n) - 1),           # uniform: 0
            1.0,                                               # zero code counts as sparse
            (math.sqrt(n) - 7 / 5) / (math.sqrt(n) - 1)]       # ‖·‖₁ = 7, ‖·‖₂ = 5
    assert metrics.hoyer(CODES) == pytest.approx(np.mean(hand))
    assert math.isnan(metrics.hoyer(np.ones((3, 1))))


def test_summarize_names():
    x = np.random.default_rng(0).random((5, 784))
    s = metrics.summarize(x, x, np.abs(np.random.default_rng(1).random((5, 8))))
    assert set(s) == {"mse", "bce", "mean_activation", "active_fraction", "hoyer", "dead_units"}
    assert s["mse"] == 0.0
