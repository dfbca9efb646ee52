"""Sparsity and weight penalties of the sparse autoencoders (formulas: reference/ANCHORS.md).

- ``ActivityPenalty``: an identity layer on the code that adds
  ``l1 · mean_r Σ_j |h_rj|  +  beta · Σ_j KL(p ‖ p̂_j)`` (or the mean over j) to the model loss,
  where ``p̂_j`` is unit j's mean activation over the batch. KL is a statistic of the whole batch,
  so it is added with ``add_loss`` rather than as a Keras activity regularizer (Keras divides
  those by the batch size).
- ``WeightDecay``: ``(lambda/2) · Σ W²``; ``NonNegativity``: ``(alpha/2) · Σ min(W, 0)²``.
  Both are kernel regularizers, so biases are never penalised.

Everything uses ``keras.ops`` and runs on any Keras 3 backend.
"""

from __future__ import annotations

import keras
from keras import ops

# KL(p ‖ p̂) is exact for p̂ in [EPS, 1 - EPS] and continued by its tangent lines outside: relu
# codes can average 1 or more, or exactly 0, where KL is undefined
EPS = 1e-6


def kl_divergence(p: float, p_hat):
    """Elementwise KL(p ‖ p̂) between Bernoulli(p) and Bernoulli(p̂), for any real p̂.

    With q = clip(p̂, EPS, 1 − EPS) and KL'(q) = (1 − p)/(1 − q) − p/q:

        KL(p ‖ p̂) = p·log(p/q) + (1 − p)·log((1 − p)/(1 − q)) + KL'(q)·(p̂ − q)

    Inside [EPS, 1 − EPS] the last term is 0 and this is KL itself. Outside, it is KL's tangent
    line at the nearer clip point: finite, convex, and with KL's own slope there, so a relu unit
    whose batch mean is 1 or more is still pushed down (slope ≈ (1 − p)/EPS), rather than paying
    a constant with no gradient as a plain clip would. ``p`` is a float or broadcasts against
    ``p_hat`` (a packed model's (slots, 1) against (slots, units)).
    """
    q = ops.clip(p_hat, EPS, 1.0 - EPS)
    kl = p * ops.log(p / q) + (1.0 - p) * ops.log((1.0 - p) / (1.0 - q))
    slope = (1.0 - p) / (1.0 - q) - p / q  # KL'(q)
    return kl + slope * (p_hat - q)


@keras.saving.register_keras_serializable(package="sae")
class ActivityPenalty(keras.layers.Layer):
    """Identity on the code (batch, units) that adds the L1 and KL sparsity penalties."""

    def __init__(self, l1=0.0, beta=0.0, p=0.05, reduction="sum", **kwargs):
        super().__init__(**kwargs)
        self.l1, self.beta, self.p, self.reduction = float(l1), float(beta), float(p), reduction

    def penalty(self, h):
        total = ops.convert_to_tensor(0.0, dtype=h.dtype)
        if self.l1 > 0:
            total = total + self.l1 * ops.mean(ops.sum(ops.abs(h), axis=-1))
        if self.beta > 0:
            kl = kl_divergence(self.p, ops.mean(h, axis=0))  # (units,)
            total = total + self.beta * (ops.sum(kl) if self.reduction == "sum" else ops.mean(kl))
        return total

    def call(self, h):
        if self.l1 > 0 or self.beta > 0:
            self.add_loss(self.penalty(h))
        return h

    def get_config(self):
        return {**super().get_config(), "l1": self.l1, "beta": self.beta, "p": self.p,
                "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="sae")
class WeightDecay(keras.regularizers.Regularizer):
    """(lambda/2) · Σ W², the weight decay of Ng's sparse autoencoder."""

    def __init__(self, weight_decay):
        self.weight_decay = float(weight_decay)

    def __call__(self, w):
        return 0.5 * self.weight_decay * ops.sum(ops.square(w))

    def get_config(self):
        return {"weight_decay": self.weight_decay}


@keras.saving.register_keras_serializable(package="sae")
class NonNegativity(keras.regularizers.Regularizer):
    """(alpha/2) · Σ min(W, 0)², the NCAE penalty: only negative weights cost."""

    def __init__(self, alpha):
        self.alpha = float(alpha)

    def __call__(self, w):
        return 0.5 * self.alpha * ops.sum(ops.square(ops.minimum(w, 0.0)))

    def get_config(self):
        return {"alpha": self.alpha}
