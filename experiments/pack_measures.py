"""A pack's measures (experiments/packed.py): every slot's reconstruction and sparsity measures on
a split in one pass over it, as ``runner.final_measures`` takes them of a plain model, compiled
where that pays.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from keras import ops

from experiments import metrics
from experiments.data import Dataset
from experiments.models import PIXELS

MEASURE_ELEMENTS = 1 << 23  # slots x samples x pixels per evaluation chunk (32 MiB of float32)


def _compiled(fn: Callable, variables: list, tensorflow: bool = True) -> Callable:
    """``fn`` compiled by XLA, reading ``variables`` (all it reads) as they are at each call. On
    JAX their values go in as arguments (``jax.jit`` would freeze those of its first call); eager,
    JAX compiles each operation for each new shape, which cost more. On TensorFlow only when
    ``tensorflow`` (eager, it compiles nothing); elsewhere ``fn`` itself."""
    backend = keras.backend.backend()
    if backend == "tensorflow" and tensorflow:
        import tensorflow as tf

        return tf.function(fn, jit_compile=True, reduce_retracing=True)
    if backend != "jax":
        return fn
    import jax

    def stateless(values, x):
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
            return fn(x)

    jitted = jax.jit(stateless)
    return lambda x: jitted([v.value for v in variables], x)


class PackMeasures:
    """The measures of a ``PackedAutoencoder``'s slots: after every epoch on the validation split
    (``split``), and at a trial's end on the validation and test splits (``final``)."""

    def __init__(self, model: keras.Model, data: Dataset):
        self.model, self.data = model, data
        self._val_variance = metrics.pixel_variance(data.x_val)  # the same after every epoch
        read = [*model.slot_weights(), model.hyper["k"]]  # all the measures read
        # the per-epoch measures compiled (eager, they took a fifth of a single trial's epoch);
        # the final ones, with the cross-entropy, once per trial and split: compiling them for
        # each split's shape costs TensorFlow more than it saves
        self._sums = {
            bce: _compiled(lambda x, bce=bce: self._chunk_sums(x, bce), read, tensorflow=not bce)
            for bce in (False, True)
        }

    def split(self, x: np.ndarray, bce: bool = False) -> dict[str, np.ndarray]:
        """Every slot's measures on ``x`` (n, 784), each an array (slots,)."""
        variance = self._val_variance if x is self.data.x_val else metrics.pixel_variance(x)
        measures = metrics.Measures(bce=bce, variance=variance)
        chunk = max(1, MEASURE_ELEMENTS // (self.model.slots * PIXELS))
        for start in range(0, len(x), chunk):
            part = ops.convert_to_tensor(x[start : start + chunk], "float32")
            measures.add_sums(self._sums[bce](part), len(part))
        return {key: np.asarray(value) for key, value in measures.result().items()}

    def final(self, slots: list[int]) -> dict[int, dict[str, float]]:
        """``runner.final_measures`` of each of ``slots``: ``val_*`` and ``test_*`` measures, the
        cross-entropy included, and the norms of its decoder columns."""
        if not slots:
            return {}
        splits = {
            "val": self.split(self.data.x_val, True),
            "test": self.split(self.data.x_test, True),
        }
        kernels = ops.convert_to_numpy(self.model.decoder_kernel)
        return {
            k: {
                **{
                    f"{split}_{name}": float(values[k])
                    for split, measured in splits.items()
                    for name, values in measured.items()
                },
                **metrics.decoder_norms(kernels[k]),
            }
            for k in slots
        }

    def _chunk_sums(self, x, bce: bool) -> dict:
        codes = self.model.encode(x)
        return metrics.chunk_sums(
            x,
            self.model.decode(codes),
            codes,
            metrics.unit_scale(self.model.decoder_kernel),
            bce=bce,
        )
