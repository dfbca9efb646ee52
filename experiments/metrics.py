"""Reconstruction and sparsity measures over a whole split, in NumPy (formulas: ANCHORS.md).

Mean activation alone can be gamed by a relu code that shrinks while the decoder grows, so the
scale-free measures (active fraction, Hoyer sparseness, dead units) are reported beside it.
"""

from __future__ import annotations

import numpy as np

# a code entry counts as active above this; relu codes are exactly 0 when off, sigmoid codes never
ACTIVE_THRESHOLD = 1e-3


def mse(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Per-pixel mean squared reconstruction error."""
    return float(np.mean(np.square(x - x_hat, dtype=np.float64)))


def bce(x: np.ndarray, x_hat: np.ndarray, eps: float = 1e-7) -> float:
    """Per-pixel binary cross-entropy, x̂ clipped into (0, 1)."""
    x_hat = np.clip(x_hat.astype(np.float64), eps, 1 - eps)
    return float(np.mean(-(x * np.log(x_hat) + (1 - x) * np.log(1 - x_hat))))


def mean_activation(codes: np.ndarray) -> float:
    """Mean code activation over samples and units: the study's sparsity target."""
    return float(np.mean(codes, dtype=np.float64))


def active_fraction(codes: np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> float:
    """Fraction of code entries (sample, unit) above ``threshold``."""
    return float(np.mean(codes > threshold))


def hoyer(codes: np.ndarray) -> float:
    """Mean over samples of the Hoyer sparseness (√n − ‖h‖₁/‖h‖₂)/(√n − 1) of each code.

    1 means one active unit, 0 all units equal. An all-zero code counts as 1 (nothing active);
    a one-unit code has no sparseness, so the result is NaN.
    """
    codes = np.asarray(codes, np.float64)
    n = codes.shape[1]
    if n < 2:
        return float("nan")
    l1 = np.abs(codes).sum(axis=1)
    l2 = np.sqrt(np.square(codes).sum(axis=1))
    ratio = np.divide(l1, l2, out=np.ones_like(l1), where=l2 > 0)  # zero code: ratio 1 -> 1
    return float(np.mean((np.sqrt(n) - ratio) / (np.sqrt(n) - 1)))


def dead_units(codes: np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> int:
    """Units never above ``threshold`` on any sample of the split."""
    return int(np.sum(~np.any(codes > threshold, axis=0)))


def summarize(x: np.ndarray, x_hat: np.ndarray, codes: np.ndarray) -> dict[str, float]:
    """All measures of one split, keyed by the names tracking and the study use."""
    return {
        "mse": mse(x, x_hat),
        "bce": bce(x, x_hat),
        "mean_activation": mean_activation(codes),
        "active_fraction": active_fraction(codes),
        "hoyer": hoyer(codes),
        "dead_units": float(dead_units(codes)),
    }
