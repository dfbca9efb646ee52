"""Reconstruction and sparsity measures over a whole split.

A relu code can meet any mean-activation target without being sparse: shrink the code and grow
the decoder by the same factor, and the reconstruction is unchanged. So every code measure here is
taken on the code *weighted by its decoder column's size*: unit j's activation h_j times the root
mean square over the 784 pixels of its decoder column d_j (``unit_scale``), i.e. how far, in RMS
over the pixels, the unit moves the output's logits. Rescaling a unit (h_j · s, d_j / s) leaves
every measure as it was. ``raw_activation`` keeps the unweighted mean the notebooks measured.

- ``mean_activation``: mean over samples and units of the weighted code;
- ``l0``: mean number of active units per sample (weighted code above ``ACTIVE_THRESHOLD``),
  ``active_fraction`` = l0 / units, ``dead_units``: units never active on the split;
- ``hoyer``: Hoyer sparseness of each weighted code, averaged;
- ``mse`` per pixel, ``fvu`` = mse / the split's pixel variance (fraction of variance
  unexplained), ``bce`` per pixel.

The arithmetic runs in ``keras.ops`` on whatever device holds the model, and every measure takes
an optional leading *slot* axis: a packed model's ``x_hat`` of shape (slots, n, 784) and codes
(slots, n, units) against the shared inputs ``x`` (n, 784) give one value per slot. Only those
per-slot totals leave the device. ``Measures`` adds chunks of a split, so a large split times many
slots never has to fit in memory at once.
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

from experiments import losses

# a weighted code entry counts as active above this; relu codes are exactly 0 when off
ACTIVE_THRESHOLD = 1e-3
NAMES = (
    "mse",
    "fvu",
    "bce",
    "mean_activation",
    "raw_activation",
    "l0",
    "active_fraction",
    "hoyer",
    "dead_units",
)


def unit_scale(decoder_kernel):
    """Each code unit's decoder column size, RMS over the pixels: ‖d_j‖₂ / √pixels.
    ``decoder_kernel`` (..., units, pixels) → (..., units)."""
    return ops.sqrt(ops.mean(ops.square(ops.convert_to_tensor(decoder_kernel, "float32")), axis=-1))


def decoder_norms(decoder_kernel: np.ndarray) -> dict[str, float]:
    """The L2 norms of a decoder's columns (units, pixels), median and largest over the code
    units: how far the decoder grew."""
    norms = np.linalg.norm(np.asarray(decoder_kernel, np.float64), axis=-1)
    return {"decoder_norm_median": float(np.median(norms)), "decoder_norm_max": float(norms.max())}


def pixel_variance(x: np.ndarray) -> float:
    """Mean over pixels of each pixel's variance over the split: the MSE of predicting the
    split's own mean image, the denominator of the FVU."""
    return float(np.mean(np.var(np.asarray(x, np.float64), axis=0)))


class Measures:
    """Running totals of every measure over chunks of one split; ``result()`` gives the means.

    ``bce=False`` skips the cross-entropy, the one measure that costs a logarithm per pixel: the
    per-epoch validation measures of a training run leave it out, the final ones include it.
    ``variance`` (``pixel_variance`` of the split) adds the FVU.
    """

    def __init__(
        self, bce: bool = True, threshold: float = ACTIVE_THRESHOLD, variance: float | None = None
    ):
        self.bce, self.threshold, self.variance = bce, threshold, variance
        self.n = 0  # samples so far
        self.sums: dict[str, np.ndarray] = {}
        self.max_code: np.ndarray | None = None  # (..., units): largest activation of each unit

    def add(self, x, x_hat, codes=None, scale=None) -> None:
        """One chunk: inputs (n, 784), reconstructions (..., n, 784), codes (..., n, units) and
        their ``unit_scale`` (..., units); without codes (PCA, the mean image) only the
        reconstruction measures."""
        self.add_sums(chunk_sums(x, x_hat, codes, scale, self.bce, self.threshold), len(x))

    def add_sums(self, sums: dict, n: int) -> None:
        """One chunk of ``n`` samples, as ``chunk_sums`` gave it (perhaps from a compiled
        function)."""
        for key, value in sums.items():
            value = ops.convert_to_numpy(value).astype(np.float64)
            if key == "max_code":
                self.max_code = value if self.max_code is None else np.maximum(self.max_code, value)
            else:
                self.sums[key] = self.sums.get(key, 0.0) + value
        self.n += n

    def result(self) -> dict[str, float | np.ndarray]:
        """Means per sample: floats for a plain model, arrays (slots,) for a packed one."""
        if not self.n:
            raise ValueError("no samples were measured")
        out = {key: value / self.n for key, value in self.sums.items()}
        if self.variance:
            out["fvu"] = out["mse"] / self.variance
        if self.max_code is not None:
            units = self.max_code.shape[-1]
            out["active_fraction"] = out["l0"] / units
            out["dead_units"] = np.sum(self.max_code <= self.threshold, axis=-1).astype(float)
            if units < 2:  # one unit has no sparseness
                out["hoyer"] = np.full_like(out["hoyer"], math.nan)
        return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in out.items()}


def chunk_sums(
    x, x_hat, codes=None, scale=None, bce: bool = True, threshold: float = ACTIVE_THRESHOLD
) -> dict:
    """The sums over one chunk's samples that ``Measures`` adds up, and each unit's largest
    weighted activation (``max_code``): tensors, in ``keras.ops`` alone, so a backend can compile
    it. ``scale`` (..., units) weights the codes (``unit_scale``); None leaves them as they are
    (the VAE, whose decoder is not one layer)."""
    x = ops.convert_to_tensor(x, "float32")
    x_hat = ops.convert_to_tensor(x_hat, "float32")
    samples = (-2, -1)
    sums = {"mse": ops.sum(losses.squared_error(x, x_hat), axis=-1)}
    if codes is not None:
        codes = ops.convert_to_tensor(codes, "float32")
        weighted = (
            codes
            if scale is None
            else codes * ops.expand_dims(ops.convert_to_tensor(scale, "float32"), -2)
        )
        units = codes.shape[-1]
        sums["raw_activation"] = ops.sum(codes, axis=samples) / units
        sums["mean_activation"] = ops.sum(weighted, axis=samples) / units
        sums["l0"] = ops.sum(ops.cast(weighted > threshold, "float32"), axis=samples)
        sums["hoyer"] = ops.sum(_hoyer_per_sample(weighted), axis=-1)
        sums["max_code"] = ops.max(weighted, axis=-2)
    if bce:
        sums["bce"] = ops.sum(losses.binary_crossentropy(x, x_hat), axis=-1)
    return sums


def _hoyer_per_sample(codes):
    """(√n − ‖h‖₁/‖h‖₂)/(√n − 1) per code; an all-zero code counts as 1 (nothing active)."""
    n = codes.shape[-1]
    root = math.sqrt(n)
    l1 = ops.sum(ops.abs(codes), axis=-1)
    l2 = ops.sqrt(ops.sum(ops.square(codes), axis=-1))
    ratio = ops.where(l2 > 0, l1 / ops.where(l2 > 0, l2, 1.0), 1.0)
    return (root - ratio) / (root - 1) if n > 1 else ratio * 0.0


def summarize(x, x_hat, codes, scale=None, bce: bool = True) -> dict[str, float | np.ndarray]:
    """All measures of one split in one piece, keyed by the names tracking and the study use."""
    measures = Measures(bce=bce, variance=pixel_variance(x))
    measures.add(x, x_hat, codes, scale)
    return measures.result()


def mse(x, x_hat) -> float:
    """Per-pixel mean squared error of any reconstruction of ``x`` (PCA's, the mean image's)."""
    return float(summarize(x, x_hat, None, bce=False)["mse"])
