"""Sparsity and weight penalties against the formulas (Ng's notes; Hosseini-Asl et al.)."""

import numpy as np
import pytest
from keras import ops

from experiments import models
from experiments.regularizers import ActivityPenalty, NonNegativity, WeightDecay
from tests.conftest import tiny

RNG = np.random.default_rng(0)
# relu-like codes: exact zeros, a unit that is always off and a unit whose mean exceeds 1
H = np.abs(RNG.normal(size=(16, 5))).astype("float32") * (RNG.random((16, 5)) > 0.5)
H[:, 0] = 0.0
H[:, 1] = 2.0 + H[:, 1]


def kl(p, q):
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_kl_sparsity_matches_formula_and_stays_finite(reduction):
    p, beta = 0.05, 3.0
    p_hat = np.clip(H.mean(axis=0), 1e-6, 1 - 1e-6)  # dead and >1 units clipped into (0, 1)
    per_unit = kl(p, p_hat)
    expected = beta * (per_unit.sum() if reduction == "sum" else per_unit.mean())
    got = float(ops.convert_to_numpy(
        ActivityPenalty(beta=beta, p=p, reduction=reduction).penalty(ops.convert_to_tensor(H))))
    assert np.isfinite(got)
    assert got == pytest.approx(expected, rel=1e-4)


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
    assert float(WeightDecay(0.003)(w)) == pytest.approx(0.0015 * np.sum(w ** 2), rel=1e-5)
    assert float(NonNegativity(0.003)(w)) == pytest.approx(
        0.0015 * np.sum(np.minimum(w, 0) ** 2), rel=1e-5)
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
    decay = 0.5 * 0.006 * (np.sum(encoder_w ** 2)
                           + (np.sum(decoder_w ** 2) if layers == "both" else 0))
    kl_term = float(ops.convert_to_numpy(ActivityPenalty(beta=3.0, p=0.05).penalty(codes)))
    assert len(model.losses) == n_kernel_penalties + 1  # + the KL on the code
    assert float(sum(ops.convert_to_numpy(loss) for loss in model.losses)) == pytest.approx(
        decay + kl_term, rel=1e-4)


def test_biases_are_not_decayed():
    model = models.build(tiny("ncae", **{"model.penalty_layers": "both"}))
    for sub in ("encoder", "decoder"):
        for layer in model.get_layer(sub).layers:
            assert getattr(layer, "bias_regularizer", None) is None
