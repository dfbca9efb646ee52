"""The sparsity and weight penalties as Keras pieces of the plain models; their arithmetic is
``losses.py``'s, shared with the packed trainer.

- ``ActivityPenalty``: an identity layer on the code that adds ``l1 · losses.l1_activity`` and
  ``beta · losses.kl_sparsity`` to the model loss. KL is a statistic of the whole batch, so it
  is added with ``add_loss`` rather than as a Keras activity regularizer (Keras divides those by
  the batch size).
- ``WeightDecay`` (``lambda · losses.weight_decay``) and ``NonNegativity``
  (``alpha · losses.nonnegativity``): kernel regularizers, so biases are never penalised.
"""

from __future__ import annotations

import keras
from keras import ops

from experiments import losses


@keras.saving.register_keras_serializable(package="sae")
class ActivityPenalty(keras.layers.Layer):
    """Identity on the code (batch, units) that adds the L1 and KL sparsity penalties."""

    def __init__(self, l1=0.0, beta=0.0, p=0.05, reduction="sum", **kwargs):
        super().__init__(**kwargs)
        self.l1, self.beta, self.p, self.reduction = float(l1), float(beta), float(p), reduction

    def penalty(self, h):
        total = ops.convert_to_tensor(0.0, dtype=h.dtype)
        if self.l1 > 0:
            total = total + self.l1 * losses.l1_activity(h)
        if self.beta > 0:
            total = total + self.beta * losses.kl_sparsity(h, self.p, self.reduction)
        return total

    def compute_output_shape(self, input_shape):
        # the shape it keeps: building a model then traces no penalty (a third of the build)
        return input_shape

    def call(self, h):
        if self.l1 > 0 or self.beta > 0:
            self.add_loss(self.penalty(h))
        return h

    def get_config(self):
        return {
            **super().get_config(),
            "l1": self.l1,
            "beta": self.beta,
            "p": self.p,
            "reduction": self.reduction,
        }


class _KernelPenalty(keras.regularizers.Regularizer):
    """``weight · formula(W)``, saved as ``{key: weight}``, ``key`` its subclass's argument."""

    def __init__(self, weight, formula, key: str):
        self.weight, self.formula, self.key = float(weight), formula, key

    def __call__(self, w):
        return self.weight * self.formula(w)

    def get_config(self):
        return {self.key: self.weight}


@keras.saving.register_keras_serializable(package="sae")
class WeightDecay(_KernelPenalty):
    """(lambda/2) · Σ W², the weight decay of Ng's sparse autoencoder."""

    def __init__(self, weight_decay):
        super().__init__(weight_decay, losses.weight_decay, "weight_decay")


@keras.saving.register_keras_serializable(package="sae")
class NonNegativity(_KernelPenalty):
    """(alpha/2) · Σ min(W, 0)², the NCAE penalty: only negative weights cost."""

    def __init__(self, alpha):
        super().__init__(alpha, losses.nonnegativity, "alpha")
