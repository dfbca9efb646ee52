"""Sparsity and weight penalties against the formulas (Ng's notes; Hosseini-Asl et al.)."""

import keras
import numpy as np
import pytest
from keras import ops

from experiments import models
from experiments.losses import KL_EPS as EPS
from experiments.losses import kl_divergence
from experiments.regularizers import ActivityPenalty, NonNegativity, WeightDecay
from tests.conftest import tiny

RNG = np.random.default_rng(0)
# relu-like codes: exact zeros, a unit that is always off and a unit whose mean exceeds 1
H = np.abs(RNG.normal(size=(16, 5))).astype("float32") * (RNG.random((16, 5)) > 0.5)
H[:, 0] = 0.0
H[:, 1] = 2.0 + H[:, 1]


# the clip points as float32 holds them: 1 - 1e-6 rounds to 1 - 1.013e-6
LOW, HIGH = float(np.float32(EPS)), float(np.float32(1 - EPS))


def kl(p, q):
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def kl_slope(p, q):
    """dKL(p ‖ q)/dq."""
    return (1 - p) / (1 - q) - p / q


def kl_extended(p, q):
    """KL inside [LOW, HIGH], its tangent line at the nearer clip point outside (float64)."""
    at = np.clip(q, LOW, HIGH)
    return kl(p, at) + kl_slope(p, at) * (q - at)


def gradient(f, x: np.ndarray) -> np.ndarray:
    """d Σ f(x) / dx on the current Keras backend, for an elementwise ``f``."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: f(v).sum())(x))
    if backend == "tensorflow":
        import tensorflow as tf

        v = tf.Variable(x)
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(f(v))
        return tape.gradient(total, v).numpy()
    import torch

    v = torch.tensor(x, requires_grad=True)
    f(v).sum().backward()
    return v.grad.numpy()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_kl_sparsity_matches_formula_and_stays_finite(reduction):
    p, beta = 0.05, 3.0
    p_hat = H.mean(axis=0)  # a dead unit (0) and one above 1
    per_unit = kl_extended(p, p_hat.astype(np.float64))
    expected = beta * (per_unit.sum() if reduction == "sum" else per_unit.mean())
    got = float(
        ops.convert_to_numpy(
            ActivityPenalty(beta=beta, p=p, reduction=reduction).penalty(ops.convert_to_tensor(H))
        )
    )
    assert np.isfinite(got)
    assert got == pytest.approx(expected, rel=1e-4)


# below the lower clip point, inside, at the clip points, and a relu unit's mean at 1 and above
P_HAT = np.array([-0.5, 0.0, 5e-7, 1e-3, 0.05, 0.3, 0.9, 0.999, 1.0, 1.5, 4.0], "float32")


@pytest.mark.parametrize("p", [0.01, 0.05, 0.3])
def test_kl_and_its_gradient_on_both_sides_of_the_clip_points(p):
    got = ops.convert_to_numpy(kl_divergence(p, ops.convert_to_tensor(P_HAT)))
    q = P_HAT.astype(np.float64)
    np.testing.assert_allclose(got, kl_extended(p, q), rtol=2e-4, atol=1e-6)
    slope = gradient(lambda v: kl_divergence(p, v), P_HAT)
    np.testing.assert_allclose(slope, kl_slope(p, np.clip(q, LOW, HIGH)), rtol=2e-3, atol=1e-4)
    inside = (q > LOW) & (q < HIGH)
    np.testing.assert_allclose(slope[inside], kl_slope(p, q[inside]), rtol=2e-3, atol=1e-4)
    # a unit whose mean is 1 or more is pushed down, the harder the further it is: no plateau
    assert np.all(slope[q >= 1] > 1e5) and np.all(np.diff(got[q >= 0.9]) > 0)
    assert np.all(slope[q < LOW] < 0)


def test_a_relu_unit_above_one_gets_a_gradient_from_the_penalty():
    # column 1 of H averages above 2: its codes still get KL's slope at the clip point
    penalty = ActivityPenalty(beta=3.0, p=0.05)
    grads = gradient(lambda h: penalty.penalty(h)[None], H)
    per_code = 3.0 * kl_slope(0.05, HIGH) / len(H)  # d(beta · KL(p̂_1))/dh_r1, p̂_1 = mean_r h_r1
    np.testing.assert_allclose(grads[:, 1], per_code, rtol=2e-3)


def test_l1_activity_is_batch_mean_of_per_sample_sum():
    lam = 1e-3
    got = float(ops.convert_to_numpy(ActivityPenalty(l1=lam).penalty(ops.convert_to_tensor(H))))
    assert got == pytest.approx(lam * np.abs(H).sum(axis=1).mean(), rel=1e-5)


def test_kl_is_zero_at_target():
    h = np.full((8, 3), 0.05, "float32")
    got = float(ops.convert_to_numpy(ActivityPenalty(beta=3.0, p=0.05).penalty(h)))
    assert got == pytest.approx(0.0, abs=1e-6)


def test_weight_decay_and_nonnegativity():
    w = RNG.normal(size=(6, 4)).astype("float32")
    assert float(WeightDecay(0.003)(w)) == pytest.approx(0.0015 * np.sum(w**2), rel=1e-5)
    assert float(NonNegativity(0.003)(w)) == pytest.approx(
        0.0015 * np.sum(np.minimum(w, 0) ** 2), rel=1e-5
    )
    assert float(NonNegativity(1.0)(np.abs(w))) == 0.0


@pytest.mark.parametrize("layers, n_kernel_penalties", [("encoder", 1), ("both", 2)])
def test_penalty_layers_decide_which_kernels_decay(layers, n_kernel_penalties):
    cfg = tiny("sparse_kl_wd", **{"model.penalty_layers": layers})
    model = models.build(cfg)
    x = RNG.random((4, 784)).astype("float32")
    codes = models.encode(model, x)
    model(x)  # an eager call collects the losses of this batch
    encoder_w = models.encoder_kernel(model)
    decoder_w = np.asarray(model.get_layer("decoder").get_layer("reconstruction").kernel)
    decay = 0.5 * 0.006 * (np.sum(encoder_w**2) + (np.sum(decoder_w**2) if layers == "both" else 0))
    kl_term = float(ops.convert_to_numpy(ActivityPenalty(beta=3.0, p=0.05).penalty(codes)))
    assert len(model.losses) == n_kernel_penalties + 1  # + the KL on the code
    assert float(sum(ops.convert_to_numpy(loss) for loss in model.losses)) == pytest.approx(
        decay + kl_term, rel=1e-4
    )


def test_biases_are_not_decayed():
    model = models.build(tiny("ncae", **{"model.penalty_layers": "both"}))
    for sub in ("encoder", "decoder"):
        for layer in model.get_layer(sub).layers:
            assert getattr(layer, "bias_regularizer", None) is None
