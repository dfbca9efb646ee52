"""topk, the k-sparse autoencoder: at most k active units per digit (on every backend: make test
runs this file on JAX too), ties broken the same way everywhere, its decoder columns at exactly
unit norm after training, whatever model.decoder_norm says. The packed slot against the trial
alone: test_packed.py; the study and its report: test_report.py."""

import numpy as np
import pytest
from keras import ops

from experiments import models
from experiments.runner import train_and_evaluate
from experiments.topk import keep_top_k
from tests.conftest import tiny


def reference_top_k(codes: np.ndarray, k: int) -> np.ndarray:
    """numpy's stable sort: the k largest of each row, equal values by lower index first."""
    order = np.argsort(-codes, axis=-1, kind="stable")[..., :k]
    out = np.zeros_like(codes)
    np.put_along_axis(out, order, np.take_along_axis(codes, order, axis=-1), axis=-1)
    return out


def relu_codes(shape, seed=0) -> np.ndarray:
    """relu-like codes: about half exactly 0, some rows all tied, some ties among the largest."""
    codes = np.maximum(np.random.default_rng(seed).normal(size=shape), 0).astype("float32")
    codes[..., 0, :] = 1.0  # one digit with every unit tied
    codes[..., 1, :6] = [3.0, 2.0, 2.0, 2.0, 2.0, 1.0]  # a tie across the k-th place
    codes[..., 2, :] = 0.0  # a digit with no active unit
    return codes


@pytest.mark.parametrize("k", [1, 3, 8, 32])
def test_keep_top_k_keeps_the_k_largest_and_breaks_ties_by_unit_index(k):
    codes = relu_codes((64, 32))
    kept = ops.convert_to_numpy(keep_top_k(codes, k))
    assert ((kept != 0).sum(axis=-1) <= k).all()
    np.testing.assert_array_equal(kept, reference_top_k(codes, k))
    if k < 32:  # the tied digit keeps units 0 … k-1, not any k of them
        assert np.flatnonzero(kept[0]).tolist() == list(range(k))


def test_each_slot_keeps_its_own_k():
    codes = relu_codes((3, 16, 32))
    ks = np.array([1, 5, 32], "float32")  # as the packed trainer holds them: one per slot
    kept = ops.convert_to_numpy(keep_top_k(codes, ks[:, None, None]))
    for slot, k in enumerate(ks.astype(int)):
        np.testing.assert_array_equal(kept[slot], reference_top_k(codes[slot], k))


@pytest.mark.parametrize("k, decoder_norm", [(1, 28.0), (4, 0.0)])
def test_a_trained_topk_model_has_at_most_k_active_units_and_unit_norm_decoder_columns(
    k, decoder_norm, tiny_data
):
    # model.decoder_norm (the penalty families' bound, 0: none) does not reach topk
    cfg = tiny(
        "topk", **{"model.k": k, "train.learning_rate": 1e-2, "model.decoder_norm": decoder_norm}
    )
    start = models.decoder_kernel(models.build(cfg))
    result = train_and_evaluate(cfg, tiny_data)
    model = result.model  # the plain Keras model, exported from its pack
    for x in (tiny_data.x_train, tiny_data.x_test):
        active = (models.encode(model, x) != 0).sum(axis=-1)
        assert active.max() == k  # k is reached: the check below is not about dead codes
        assert (active <= k).all()
    assert 0 < result.final["val_l0"] <= k and 0 < result.final["test_l0"] <= k
    kernel = models.decoder_kernel(model)
    assert np.linalg.norm(kernel - start) > 0.05 * np.linalg.norm(start)  # training moved them
    # ... and each column ended at exactly unit norm (Gao et al.)
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("decoder_norm", [0.0, 5.0, 28.0])
def test_topk_starts_with_its_decoder_columns_at_unit_norm(decoder_norm):
    cfg = tiny("topk", **{"model.decoder_norm": decoder_norm})
    kernel = models.decoder_kernel(models.build(cfg))
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=1), 1.0, rtol=1e-5)


def _largest_intermediate(fn, shape) -> int:
    """The most elements any intermediate tensor of ``fn`` on zeros of ``shape`` holds, as the
    backend traces it (a jaxpr on JAX, a graph on TensorFlow)."""
    import keras

    x = np.zeros(shape, "float32")
    if keras.backend.backend() == "jax":
        import jax

        jaxpr = jax.make_jaxpr(fn)(x).jaxpr
        return max(int(np.prod(v.aval.shape)) for eqn in jaxpr.eqns for v in eqn.outvars)
    import tensorflow as tf

    graph = tf.function(fn).get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    return max(
        int(np.prod(t.shape.as_list()))
        for op in graph.get_operations()
        for t in op.outputs
        if t.shape.rank is not None
    )


def test_top_k_memory_is_linear_in_the_code_units():
    # a pack of 4 slots x 64 digits x 512 units, a k per slot: nothing as large as units x units
    ks = np.array([1, 7, 64, 512], "float32")[:, None, None]
    largest = _largest_intermediate(lambda c: keep_top_k(c, ks), (4, 64, 512))
    assert largest <= 4 * 64 * 512, largest
