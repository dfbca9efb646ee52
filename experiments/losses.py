"""Every formula of the loss, once.

The plain Keras models (``models.py``, through the wrappers of ``regularizers.py``), the packed
trainer (``packed.py``, K models as one) and the measures (``metrics.py``) all compute with these
functions, so a change here changes training, export and evaluation alike. Each reduces only the
axes it names and broadcasts over leading ones: a plain model's tensors, or a pack's with a
leading slot axis and per-slot coefficients of shape (slots, 1).

Reconstruction, per sample (``[..., samples, 784]`` → ``[..., samples]``):

- ``squared_error``: the mean over pixels of (x̂ − x)², the notebooks' ``mse`` loss;
- ``half_sse``: ½ · Σ over pixels of (x̂ − x)², J_E of Ng's notes (392× the mean);
- ``binary_crossentropy``: the mean over pixels of −(x·log x̂ + (1 − x)·log(1 − x̂)), with x̂
  clipped into [ε, 1 − ε] (Keras's ε, as Keras's own loss clips).

Penalties (``[..., samples, units]`` codes, ``[..., rows, cols]`` kernels → ``[...]``):

- ``l1_activity``: mean over samples of Σ_j |h_j|;
- ``kl_sparsity``: Σ_j KL(p ‖ p̂_j) (or the mean over j), p̂_j unit j's mean over the samples;
- ``weight_decay``: ½ · Σ W²; ``nonnegativity``: ½ · Σ min(W, 0)².

Means over the samples take optional ``weights`` [samples] (``sample_mean``): 1 for a sample, 0
for a row that only pads a batch to its full size (a pack's last batch of an epoch).

Everything uses ``keras.ops`` and runs on any Keras 3 backend.
"""

from __future__ import annotations

import keras
from keras import ops

# KL(p ‖ p̂) is exact for p̂ in [KL_EPS, 1 - KL_EPS] and continued by its tangent lines outside:
# relu codes can average 1 or more, or exactly 0, where KL is undefined
KL_EPS = 1e-6


def squared_error(x, x_hat):
    return ops.mean(ops.square(x - x_hat), axis=-1)


def half_sse(x, x_hat):
    return 0.5 * ops.sum(ops.square(x - x_hat), axis=-1)


def binary_crossentropy(x, x_hat):
    eps = keras.config.epsilon()
    clipped = ops.clip(x_hat, eps, 1.0 - eps)
    return -ops.mean(x * ops.log(clipped) + (1.0 - x) * ops.log(1.0 - clipped), axis=-1)


RECONSTRUCTION = {"mse": squared_error, "half_sse": half_sse, "bce": binary_crossentropy}


def kl_divergence(p, p_hat):
    """Elementwise KL(p ‖ p̂) between Bernoulli(p) and Bernoulli(p̂), for any real p̂.

    With q = clip(p̂, KL_EPS, 1 − KL_EPS) and KL'(q) = (1 − p)/(1 − q) − p/q:

        KL(p ‖ p̂) = p·log(p/q) + (1 − p)·log((1 − p)/(1 − q)) + KL'(q)·(p̂ − q)

    Inside [KL_EPS, 1 − KL_EPS] the last term is 0 and this is KL itself. Outside, it is KL's
    tangent line at the nearer clip point: finite, convex, and with KL's own slope there, so a
    relu unit whose batch mean is 1 or more is still pushed down (slope ≈ (1 − p)/KL_EPS), rather
    than paying a constant with no gradient as a plain clip would. ``p`` is a float or
    broadcasts against ``p_hat`` (a pack's (slots, 1) against (slots, units)).
    """
    q = ops.clip(p_hat, KL_EPS, 1.0 - KL_EPS)
    kl = p * ops.log(p / q) + (1.0 - p) * ops.log((1.0 - p) / (1.0 - q))
    slope = (1.0 - p) / (1.0 - q) - p / q  # KL'(q)
    return kl + slope * (p_hat - q)


def sample_mean(values, weights=None, axis: int = -1):
    """The mean over the samples (``axis`` of ``values``); with ``weights`` [samples], the mean
    over those weighted 1, rows weighted 0 left out."""
    if weights is None:
        return ops.mean(values, axis=axis)
    shape = [1] * len(values.shape)
    shape[axis] = -1
    return ops.sum(values * ops.reshape(weights, shape), axis=axis) / ops.sum(weights)


def l1_activity(codes, weights=None):
    return sample_mean(ops.sum(ops.abs(codes), axis=-1), weights)


def kl_sparsity(codes, p, reduction: str = "sum", weights=None):
    """KL(p ‖ p̂_j) of each unit's mean over the samples, summed (Ng) or averaged over units.
    KL is a statistic of the whole batch: not a per-sample term."""
    kl = kl_divergence(p, sample_mean(codes, weights, axis=-2))  # [..., units]
    return ops.sum(kl, axis=-1) if reduction == "sum" else ops.mean(kl, axis=-1)


def weight_decay(kernel):
    return 0.5 * ops.sum(ops.square(kernel), axis=(-2, -1))


def nonnegativity(kernel):
    return 0.5 * ops.sum(ops.square(ops.minimum(kernel, 0.0)), axis=(-2, -1))
