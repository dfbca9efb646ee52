"""Digits, codes and weights as plain pixel arrays (numpy alone): what the charts and the bare
pictures of figures.py are made of, and the latent grid that occupancy.py classifies.

Images are MNIST digits: flattened 784-vectors (or 28 x 28 arrays) with values in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SIDE = 28  # MNIST images are SIDE x SIDE pixels
DIGITS = 10
PICTURE_SCALE = 2  # a picture's pixels per data pixel (a digit shows at 56 x 56)
PICTURE_SIDE = 256  # pixels of the pictures that are not made of digits
RF_GAP = 3  # blank pixels between the receptive-field tiles, where the unit numbers go

Decoder = Callable[[np.ndarray], np.ndarray]


def check_digit_labels(labels) -> np.ndarray:
    """Return ``labels`` as a 1-D int array, raising ValueError unless every label is 0..9."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of digits, got shape {labels.shape}")
    labels = labels.astype(int)
    if labels.size and (labels.min() < 0 or labels.max() >= DIGITS):
        raise ValueError(
            f"labels must be digits 0..9, got values in [{labels.min()}, {labels.max()}]"
        )
    return labels


def latent_grid(n: int, limit: float) -> np.ndarray:
    """The (n*n, 2) float32 points of an n x n grid over [-limit, limit]^2, in display order.

    Row-major as drawn: the first row is the top of the picture (z[1] = +limit), each row
    runs left to right (z[0] from -limit to +limit), so decoded images tile directly.
    """
    axis = np.linspace(-limit, limit, n, dtype=np.float32)
    z0, z1 = np.meshgrid(axis, axis[::-1])
    return np.stack([z0.ravel(), z1.ravel()], axis=1)


def grid_extent(n: int, limit: float) -> tuple[float, float, float, float]:
    # Each grid point is the centre of its pixel, so the picture reaches half a step beyond.
    half = limit / (n - 1) if n > 1 else limit
    return (-limit - half, limit + half, -limit - half, limit + half)


def as_images(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return x.reshape(len(x), SIDE, SIDE)


def tile(images, rows: int, cols: int) -> np.ndarray:
    """Lay ``rows * cols`` images out row-major as one (rows*28, cols*28) picture."""
    images = as_images(images)
    return (
        images.reshape(rows, cols, SIDE, SIDE)
        .transpose(0, 2, 1, 3)
        .reshape(rows * SIDE, cols * SIDE)
    )


def enlarge(picture: np.ndarray, scale: int = PICTURE_SCALE) -> np.ndarray:
    return np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)


def grey(values: np.ndarray, top: float = 1.0) -> np.ndarray:
    """Values in [0, top] as uint8 grey levels, black 0."""
    scaled = np.clip(np.asarray(values, dtype=float) / (top if top > 0 else 1.0), 0.0, 1.0)
    return np.round(scaled * 255).astype(np.uint8)


def check_codes_labels(codes, labels) -> tuple[np.ndarray, np.ndarray]:
    codes = np.asarray(codes, dtype=float)
    if codes.ndim != 2:
        raise ValueError(f"codes must be a 2-D array (samples, dims), got shape {codes.shape}")
    labels = check_digit_labels(labels)
    if len(codes) != len(labels):
        raise ValueError(
            f"codes and labels differ in length: {len(codes)} codes, {len(labels)} labels"
        )
    return codes, labels


def pairs(x, x_hat, n: int) -> np.ndarray:
    """(2·28, n·28): the first ``n`` digits of ``x`` over their reconstructions ``x_hat``."""
    x, x_hat = as_images(x), as_images(x_hat)
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat differ in shape: {x.shape} vs {x_hat.shape}")
    if not 0 < n <= len(x):
        raise ValueError(f"n must be in 1..{len(x)}, got {n}")
    return tile(np.concatenate([x[:n], x_hat[:n]]), 2, n)


def mosaic(kernel, max_units: int) -> tuple[np.ndarray, int, int]:
    """Each encoder unit's input weights (a column of the (784, units) kernel) as a 28 x 28
    tile scaled to its own largest |weight|, the first ``max_units`` units row-major in one
    picture, NaN between tiles; returns it with the number of units shown and of columns."""
    kernel = np.asarray(kernel, dtype=float)
    if kernel.ndim != 2 or kernel.shape[0] != SIDE * SIDE:
        raise ValueError(f"kernel must have shape (784, units), got {kernel.shape}")
    units = min(kernel.shape[1], max_units)
    cols = int(np.ceil(np.sqrt(units)))
    rows = int(np.ceil(units / cols))
    scale = np.abs(kernel[:, :units]).max(axis=0)
    scaled = kernel[:, :units] / np.where(scale > 0, scale, 1.0)  # a dead unit stays all zero
    step = SIDE + RF_GAP
    mosaic = np.full((rows * step + RF_GAP, cols * step + RF_GAP), np.nan)
    for unit in range(units):
        r, c = divmod(unit, cols)
        top, left = RF_GAP + r * step, RF_GAP + c * step
        mosaic[top : top + SIDE, left : left + SIDE] = scaled[:, unit].reshape(SIDE, SIDE)
    return mosaic, units, cols
