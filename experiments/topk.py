"""The k-sparse code (Makhzani & Frey 2013; Gao et al. 2024): each sample keeps its k largest code
units and the others are set to 0, so sparsity is chosen (L0 ≤ k) instead of bought with a
penalty, and only the reconstruction is optimised.

``keep_top_k`` is the one implementation: the plain model's ``TopK`` layer and the packed
trainer (a k per slot) both call it. Ties go to the lower unit index, so exactly k units are
kept on every backend (relu's zeros may be among them: then fewer are non-zero). Its memory is
linear in the code units (a sort per sample), so a pack of wide codes needs no more than the
codes themselves a few times over (``experiments/memory.py`` counts the codes).

Everything uses ``keras.ops`` and runs on any Keras 3 backend.
"""

from __future__ import annotations

import keras
from keras import ops

# the norm of each code unit's decoder column in topk, after every step (Gao et al. 2024): fixed,
# whatever model.decoder_norm (the penalty families' bound) says, so a code cannot trade scale
# with its decoder and the unit's value is the size of its contribution
DECODER_NORM = 1.0


def keep_top_k(codes, k):
    """``codes`` [..., units] with all but each sample's ``k`` largest units set to 0.

    ``k`` is an int, or a tensor that broadcasts against [..., 1] (a pack's (slots, 1, 1), one k
    per slot; any dtype, whole numbers). Exactly k units are kept: those above the sample's k-th
    largest value, then, of those equal to it, the lowest-indexed until k are kept (numpy's
    stable sort of the negated codes keeps the same ones). The mask carries no gradient: a kept
    unit's gradient is its own, a dropped unit's is 0.

    A sort per sample, not ``ops.top_k``: top_k needs one static k, a pack holds a k per slot (a
    tensor, changed between trials without recompiling), and its tie order is the backend's own.
    Memory is linear in the units: [..., units] a few times over, never [..., units, units].
    """
    units = codes.shape[-1]
    k = ops.cast(k, "int32")
    ascending = ops.stop_gradient(ops.sort(codes, axis=-1))
    # the k-th largest value of each sample: position units - k of the ascending sort
    at_k = ops.arange(units, dtype="int32") == units - k  # broadcasts as k does
    threshold = ops.sum(ops.where(at_k, ascending, 0.0), axis=-1, keepdims=True)
    above = codes > threshold
    tied = codes == threshold
    room = k - ops.sum(ops.cast(above, "int32"), axis=-1, keepdims=True)  # places left for ties
    tied_so_far = ops.cumsum(ops.cast(tied, "int32"), axis=-1)  # this unit and lower-indexed
    return ops.where(above | (tied & (tied_so_far <= room)), codes, 0.0)


@keras.saving.register_keras_serializable(package="sae")
class TopK(keras.layers.Layer):
    """The code (batch, units) with all but each sample's ``k`` largest units set to 0."""

    def __init__(self, k, **kwargs):
        super().__init__(**kwargs)
        self.k = int(k)

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, codes):
        return keep_top_k(codes, self.k)

    def get_config(self):
        return {**super().get_config(), "k": self.k}
