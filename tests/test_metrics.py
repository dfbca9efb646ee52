"""Metrics against hand computations of the formulas (experiments/losses.py, metrics.py)."""

import math

import numpy as np
import pytest

from experiments import metrics

CODES = np.array(
    [
        [0.0, 2.0, 0.0, 0.0],  # one active unit
        [1.0, 1.0, 1.0, 1.0],  # all equal
        [0.0, 0.0, 0.0, 0.0],  # nothing active
        [3.0, 4.0, 0.0, 0.0],
    ]
)


def codes_only(codes):
    zeros = np.zeros((len(codes), 2))
    return metrics.summarize(zeros, zeros, codes)


def test_mse_and_bce():
    x = np.array([[0.0, 1.0], [1.0, 0.5]])
    x_hat = np.array([[0.5, 1.0], [0.75, 0.5]])
    s = metrics.summarize(x, x_hat, np.zeros((2, 3)))
    assert s["mse"] == pytest.approx((0.25 + 0 + 0.0625 + 0) / 4)
    expected = (
        -(
            math.log(0.5)
            + math.log(1 - 1e-7)
            + math.log(0.75)
            + 0.5 * math.log(0.5)
            + 0.5 * math.log(0.5)
        )
        / 4
    )
    assert s["bce"] == pytest.approx(expected, rel=1e-6)


def test_mean_activation_active_fraction_dead_units():
    s = codes_only(CODES)
    assert s["mean_activation"] == s["raw_activation"] == pytest.approx((2 + 4 + 0 + 7) / 16)
    assert s["active_fraction"] == pytest.approx(7 / 16)
    assert s["l0"] == pytest.approx(7 / 4)  # active units per sample
    assert s["dead_units"] == 0
    assert codes_only(CODES[:, [0, 2, 3]][[0, 2]])["dead_units"] == 3


def test_hoyer_sparseness():
    n = 4
    hand = [
        (math.sqrt(n) - 1) / (math.sqrt(n) - 1),  # one-hot: 1
        (math.sqrt(n) - 2) / (math.sqrt(n) - 1),  # uniform: 0
        1.0,  # zero code counts as sparse
        (math.sqrt(n) - 7 / 5) / (math.sqrt(n) - 1),
    ]  # ‖·‖₁ = 7, ‖·‖₂ = 5
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
    packed = metrics.Measures(variance=metrics.pixel_variance(x))
    for start in range(0, 30, 7):
        packed.add(x[start : start + 7], x_hat[:, start : start + 7], codes[:, start : start + 7])
    together = packed.result()
    for slot in range(3):
        alone = metrics.summarize(x, x_hat[slot], codes[slot])
        for key, value in alone.items():
            assert together[key][slot] == pytest.approx(value, rel=1e-5), key
    assert list(together["dead_units"]) == [0, 1, 0]


def test_code_measures_weigh_each_unit_by_its_decoder_column():
    # unit j's activation counts times the RMS of its decoder column over the pixels
    kernel = np.zeros((4, 784))
    kernel[0] = 2.0
    kernel[1, :196] = 1.0  # RMS 0.5
    kernel[2] = 1.0
    kernel[3] = 1e-4  # a unit too small to matter: inactive even where its code is 3
    scale = metrics.unit_scale(kernel)
    np.testing.assert_allclose(np.asarray(scale), [2.0, 0.5, 1.0, 1e-4], rtol=1e-6)
    zeros = np.zeros((len(CODES), 2))
    s = metrics.summarize(zeros, zeros, CODES, scale)
    weighted = CODES * np.array([2.0, 0.5, 1.0, 1e-4])
    assert s["mean_activation"] == pytest.approx(weighted.mean(), rel=1e-6)
    assert s["raw_activation"] == pytest.approx(CODES.mean())
    assert s["l0"] == pytest.approx((1 + 3 + 0 + 2) / 4)  # unit 3 never counts


def test_rescaling_a_unit_against_its_decoder_changes_no_code_measure():
    # relu is positively homogeneous: h_j * s with d_j / s reconstructs the same; the
    # measures must not reward it (the raw mean activation the notebooks used does)
    rng = np.random.default_rng(3)
    codes = np.maximum(rng.normal(size=(50, 6)), 0)
    kernel = rng.normal(size=(6, 784))
    s = np.array([0.01, 0.1, 0.5, 0.05, 0.02, 0.3])  # codes shrink, decoders grow
    before = metrics.summarize(
        np.zeros((50, 2)), np.zeros((50, 2)), codes, metrics.unit_scale(kernel)
    )
    after = metrics.summarize(
        np.zeros((50, 2)), np.zeros((50, 2)), codes * s, metrics.unit_scale(kernel / s[:, None])
    )
    for key in ("mean_activation", "l0", "active_fraction", "hoyer", "dead_units"):
        assert after[key] == pytest.approx(before[key], rel=1e-5), key
    assert after["raw_activation"] < 0.5 * before["raw_activation"]


def test_fvu_is_the_mse_over_the_splits_pixel_variance():
    rng = np.random.default_rng(4)
    x = rng.random((40, 784))
    mean_image = np.broadcast_to(x.mean(axis=0), x.shape)
    s = metrics.summarize(x, mean_image, None, bce=False)
    assert s["fvu"] == pytest.approx(1.0)  # the split's own mean image explains nothing
    assert metrics.summarize(x, x, None, bce=False)["fvu"] == 0.0
