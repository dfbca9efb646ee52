"""The k-sparse code (Makhzani & Frey 2013; Gao et al. 2024): each sample keeps its k largest code
units and the others are set to 0, so sparsity is chosen (L0 ≤ k) instead of bought with a
penalty, and only the reconstruction is optimised.

``keep_top_k`` is the one implementation: the plain model's ``TopK`` layer and the packed
trainer (a k per slot) both call it. Ties go to the lower unit index, so exactly k units are
kept on every backend (relu's zeros may be among them: then fewer are non-zero).

Everything uses ``keras.ops`` and runs on any Keras 3 backend.
"""

from __future__ import annotations

import keras
from keras import ops


def keep_top_k(codes, k):
    """``codes`` [..., units] with all but each sample's ``k`` largest units set to 0.

    ``k`` is an int, or a tensor that broadcasts against [..., 1] (a pack's (slots, 1, 1), one k
    per slot; any dtype, whole numbers). A unit's rank is the number of units of its sample that
    beat it: larger, or equal and lower-indexed; the units ranked below k are kept. The mask
    carries no gradient: a kept unit's gradient is its own, a dropped unit's is 0.

    Ranks, not ``ops.top_k``: top_k needs one static k, a pack holds a k per slot (a tensor,
    changed between trials without recompiling), and its tie order is the backend's own. The
    ranks compare every pair of units, [..., units, units]: cheap for codes of tens of units.
    """
    units = codes.shape[-1]
    mine, theirs = codes[..., :, None], codes[..., None, :]  # [..., unit, other unit]
    index = ops.arange(units)
    lower = index[None, :] < index[:, None]  # [unit, other]: the other's index is lower
    beaten = (theirs > mine) | ((theirs == mine) & lower)
    rank = ops.sum(ops.cast(beaten, "int32"), axis=-1)  # [..., units]
    return ops.where(rank < ops.cast(k, "int32"), codes, 0.0)


@keras.saving.register_keras_serializable(package="sae")
class TopK(keras.layers.Layer):
    """The code (batch, units) with all but each sample's ``k`` largest units set to 0."""

    def __init__(self, k, **kwargs):
        super().__init__(**kwargs)
        self.k = int(k)

    def call(self, codes):
        return keep_top_k(codes, self.k)

    def get_config(self):
        return {**super().get_config(), "k": self.k}
