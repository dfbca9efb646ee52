"""Figures that judge an autoencoder by eye, built from plain numpy arrays.

Every function returns a ``matplotlib.figure.Figure`` made with the object-oriented API
(no pyplot): no global state, so figures can be drawn from worker threads without a
display backend. Saving or logging the figure is the caller's job.

The ``*_picture`` functions show the same data as bare pictures, uint8 arrays (height, width)
or (height, width, 3), without axes or text: a study records them for every finished trial,
where drawing a chart (text, ticks, layout) would cost more CPU than training the trial. They
cost milliseconds; the charts are drawn where a person looks at them.

Images are MNIST digits: flattened 784-vectors (or 28 x 28 arrays) with values in [0, 1]; the
pixel arithmetic under the figures is in pixels.py. Digits always get the same tab10 colour, so
scatter plots and the occupancy map agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullLocator
from sklearn.manifold import TSNE

from experiments import pixels

if TYPE_CHECKING:
    from experiments.occupancy import Occupancy

DIGIT_COLORS = np.array([matplotlib.colormaps["tab10"](d)[:3] for d in range(10)])  # row d: digit d
DPI = 100


def _figure(
    width: float, height: float, margins: tuple[float, float, float, float] | None = None
) -> Figure:
    """A ``width`` x ``height`` inch figure, laid out by matplotlib's constrained layout, or
    with fixed ``margins`` (left, right, bottom, top, in inches) around its subplots. The
    figures a study draws for every finished trial have fixed margins: constrained layout draws
    a figure twice, and more than doubles its cost."""
    if margins is None:
        return Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    fig = Figure(figsize=(width, height), dpi=DPI)
    left, right, bottom, top = margins
    fig.subplots_adjust(
        left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height
    )
    return fig


def _show_gray(ax, picture: np.ndarray, **kwargs) -> None:
    ax.imshow(picture, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", **kwargs)


def _scatter_by_digit(ax, points: np.ndarray, labels: np.ndarray) -> None:
    # One scatter call in data order, so no digit is systematically drawn over the others.
    ax.scatter(points[:, 0], points[:, 1], c=DIGIT_COLORS[labels], s=6, alpha=0.7, linewidths=0)
    handles = [
        Line2D([], [], marker="o", linestyle="", color=DIGIT_COLORS[d], label=str(d))
        for d in np.unique(labels)
    ]
    ax.legend(handles=handles, title="digit", loc="center left", bbox_to_anchor=(1.01, 0.5))


def reconstruction_picture(x, x_hat, n: int = 10) -> np.ndarray:
    """``reconstruction_grid`` as a bare grey picture (2·56, n·56): digits over
    reconstructions."""
    return pixels.enlarge(pixels.grey(pixels.pairs(x, x_hat, n)))


def reconstruction_grid(x, x_hat, n: int = 10) -> Figure:
    """The first ``n`` digits of ``x`` on the top row, their reconstructions ``x_hat`` below."""
    pairs = pixels.pairs(x, x_hat, n)
    width = min(max(n, 6), 12)
    # Fit the height to the 2 x n picture beside the row labels, under the title.
    left, right, bottom, top = 1.2, 0.1, 0.05, 0.35
    fig = _figure(
        width, 2 * (width - left - right) / n + bottom + top, margins=(left, right, bottom, top)
    )
    ax = fig.add_subplot()
    _show_gray(ax, pairs)
    ax.set_xticks([])
    ax.set_yticks([pixels.SIDE / 2, 3 * pixels.SIDE / 2], ["original", "reconstruction"])
    ax.tick_params(length=0)
    ax.set_title(f"{n} test images and their reconstructions")
    return fig


def latent_scatter(
    codes,
    labels,
    dims: tuple[int, int] = (0, 1),
    title: str = "Latent codes of test images",
    axis_label: str = "z[{}]",
) -> Figure:
    """Scatter two code dimensions of the test codes, coloured by digit.

    ``axis_label`` is formatted with each dimension's index ("z[{}]" or "unit {}").
    """
    codes, labels = pixels.check_codes_labels(codes, labels)
    if codes.shape[1] < 2:
        raise ValueError(
            f"latent_scatter needs codes with at least 2 dimensions, got {codes.shape[1]}"
        )
    if len(dims) != 2 or not all(0 <= d < codes.shape[1] for d in dims):
        raise ValueError(f"dims must be two indices in 0..{codes.shape[1] - 1}, got {dims}")
    fig = _figure(8, 6.5, margins=(0.75, 1.0, 0.6, 0.35))
    ax = fig.add_subplot()
    _scatter_by_digit(ax, codes[:, list(dims)], labels)
    ax.set_xlabel(axis_label.format(dims[0]))
    ax.set_ylabel(axis_label.format(dims[1]))
    ax.set_title(title)
    return fig


def latent_picture(codes, labels, dims: tuple[int, int] = (0, 1)) -> np.ndarray:
    """``latent_scatter`` as a bare RGB picture (256 x 256): each code a 3 x 3 dot in its
    digit's colour at (code[dims[0]], code[dims[1]]), the smallest to the largest value of each
    dimension across the picture, up the picture for the second; a grey cross marks 0."""
    codes, labels = pixels.check_codes_labels(codes, labels)
    if codes.shape[1] < 2 or len(dims) != 2 or not all(0 <= d < codes.shape[1] for d in dims):
        raise ValueError(f"dims must be two indices of codes with shape {codes.shape}")
    side, margin = pixels.PICTURE_SIDE, 4
    picture = np.full((side, side, 3), 255, np.uint8)
    points = codes[:, list(dims)]
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high > low, high - low, 1.0)

    def pixel(values, axis):
        return np.round(
            margin + (values - low[axis]) / span[axis] * (side - 1 - 2 * margin)
        ).astype(int)

    col, row = pixel(points[:, 0], 0), side - 1 - pixel(points[:, 1], 1)
    zero_col, zero_row = pixel(np.float64(0), 0), side - 1 - pixel(np.float64(0), 1)
    if 0 <= zero_col < side:
        picture[:, zero_col] = 200
    if 0 <= zero_row < side:
        picture[zero_row, :] = 200
    colors = np.round(DIGIT_COLORS[labels] * 255).astype(np.uint8)
    for dr in (-1, 0, 1):  # in data order, as the scatter draws them
        for dc in (-1, 0, 1):
            picture[np.clip(row + dr, 0, side - 1), np.clip(col + dc, 0, side - 1)] = colors
    return picture


def latent_sweep(decode: pixels.Decoder, n: int = 20, limit: float = 3.0) -> Figure:
    """Decode an n x n grid over the 2-D latent square [-limit, limit]^2 as one picture.

    ``decode`` maps an (m, 2) float32 array to (m, 784) images. z[0] runs left to right,
    z[1] bottom to top, and the axes are in latent units.
    """
    picture = pixels.tile(decode(pixels.latent_grid(n, limit)), n, n)
    fig = _figure(8, 8)
    ax = fig.add_subplot()
    _show_gray(ax, picture, extent=pixels.grid_extent(n, limit))
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title(f"Decoded {n} x {n} grid over the latent square [-{limit:g}, {limit:g}]²")
    return fig


def code_interpolation(decode: pixels.Decoder, corners, n: int = 8) -> Figure:
    """Decode a bilinear interpolation between four codes, tiled as an n x n picture.

    ``corners`` is a (4, d) array: top-left, top-right, bottom-left, bottom-right code;
    ``decode`` maps (m, d) float32 codes to (m, 784) images.
    """
    corners = np.asarray(corners, dtype=np.float32)
    if corners.ndim != 2 or len(corners) != 4:
        raise ValueError(f"corners must be a (4, d) array, got shape {corners.shape}")
    top_left, top_right, bottom_left, bottom_right = corners
    s = np.linspace(0, 1, n, dtype=np.float32)[None, :, None]  # left -> right
    t = np.linspace(0, 1, n, dtype=np.float32)[:, None, None]  # top -> bottom
    codes = (1 - t) * ((1 - s) * top_left + s * top_right) + t * (
        (1 - s) * bottom_left + s * bottom_right
    )
    picture = pixels.tile(decode(codes.reshape(n * n, -1)), n, n)
    fig = _figure(7, 7.3)
    ax = fig.add_subplot()
    _show_gray(ax, picture)
    ax.set_axis_off()
    ax.set_title(f"Decoded bilinear interpolation between four test codes ({corners.shape[1]}-d)")
    return fig


def tsne(
    codes, labels, seed: int = 0, max_points: int = 1000, title: str = "t-SNE of latent codes"
) -> Figure:
    """Embed the codes in 2-D with t-SNE (PCA init) and scatter them coloured by digit.

    At most ``max_points`` codes are used, drawn without replacement with ``seed``.
    """
    codes, labels = pixels.check_codes_labels(codes, labels)
    if len(codes) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(codes), max_points, replace=False))
        codes, labels = codes[keep], labels[keep]
    # TSNE rejects a perplexity at or above the sample count; only tiny inputs hit this.
    perplexity = min(30.0, (len(codes) - 1) / 3)
    embedded = TSNE(
        n_components=2, init="pca", perplexity=perplexity, random_state=seed
    ).fit_transform(codes)
    fig = _figure(8, 6.5)
    ax = fig.add_subplot()
    _scatter_by_digit(ax, embedded, labels)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_title(f"{title} ({len(codes)} points)")
    return fig


RF_COLORS = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")  # red +, blue −


def receptive_field_picture(kernel, max_units: int = 64) -> np.ndarray:
    """``receptive_fields`` as a bare RGB picture: the tiles row-major (unit 0 top left), red
    positive, blue negative, white between them."""
    mosaic, _, _ = pixels.mosaic(kernel, max_units)
    rgb = RF_COLORS(np.ma.masked_invalid((mosaic + 1) / 2), bytes=True)[..., :3]
    return pixels.enlarge(rgb)


def receptive_fields(kernel, max_units: int = 64) -> Figure:
    """Show each encoder unit's input weights (a column of the (784, units) kernel) as a tile.

    Each tile is scaled to its own largest |weight|, red positive and blue negative, so
    weak units stay readable; only the first ``max_units`` units are drawn. The tiles form one
    picture (one image, not an axes per unit).
    """
    mosaic, units, cols = pixels.mosaic(kernel, max_units)
    total = np.shape(kernel)[1]
    rows = int(np.ceil(units / cols))
    step = pixels.SIDE + pixels.RF_GAP
    fig = _figure(8, 8 * rows / cols + 0.6, margins=(0.1, 0.1, 0.1, 0.6))
    ax = fig.add_subplot()
    ax.imshow(mosaic, cmap=RF_COLORS, vmin=-1, vmax=1, interpolation="nearest")
    for unit in range(units):
        r, c = divmod(unit, cols)
        ax.text(
            pixels.RF_GAP + c * step,
            pixels.RF_GAP + r * step - 0.5,
            str(unit),
            fontsize=6,
            va="bottom",
        )
    ax.set_axis_off()
    shown = f"first {units} of {total}" if units < total else f"{units}"
    ax.set_title(
        f"Encoder weights of {shown} code units\n"
        "(each tile scaled to its own max |w|; red +, blue −)"
    )
    return fig


def activation_picture(codes, labels, max_rows: int = pixels.PICTURE_SIDE) -> np.ndarray:
    """The code activations as a bare RGB picture: one row per digit (at most ``max_rows``,
    taken evenly, sorted by digit, its digit's colour in a strip on the left), one column band
    per unit, grey from black (0) to white (the largest activation). Dead units are black
    columns, a sparse code is mostly black."""
    codes, labels = pixels.check_codes_labels(codes, labels)
    keep = np.linspace(0, len(codes) - 1, min(len(codes), max_rows)).astype(int)
    order = keep[np.argsort(labels[keep], kind="stable")]
    band = max(1, pixels.PICTURE_SIDE // codes.shape[1])  # pixels per unit
    grey = pixels.grey(np.repeat(codes[order], band, axis=1), top=float(codes.max(initial=0.0)))
    strip = np.repeat(
        np.round(DIGIT_COLORS[labels[order]] * 255).astype(np.uint8)[:, None], 8, axis=1
    )
    gap = np.full((len(order), 2, 3), 255, np.uint8)
    return np.concatenate([strip, gap, np.repeat(grey[..., None], 3, axis=2)], axis=1)


def activation_histogram(codes) -> Figure:
    """Histogram of all code activations and each unit's mean activation, sorted."""
    codes = np.asarray(codes, dtype=float)
    if codes.ndim != 2:
        raise ValueError(f"codes must be a 2-D array (samples, units), got shape {codes.shape}")
    fig = _figure(10, 4.2, margins=(0.8, 0.15, 0.75, 0.65))
    hist_ax, mean_ax = fig.subplots(1, 2, width_ratios=(1, 1.3), gridspec_kw={"wspace": 0.22})

    hist_ax.hist(codes.ravel(), bins=50, color="0.35", histtype="stepfilled")
    hist_ax.set_yscale("log")  # the spike at zero would otherwise flatten the tail
    hist_ax.yaxis.set_minor_locator(NullLocator())  # unlabelled, and a third of the drawing
    hist_ax.set_xlabel("activation")
    hist_ax.set_ylabel("count (log scale)")
    hist_ax.set_title(f"All activations ({(codes == 0).mean():.0%} exactly zero)")

    means = codes.mean(axis=0)
    order = np.argsort(means)[::-1]
    positions = np.arange(len(order))
    mean_ax.bar(positions, means[order], color="0.35")
    mean_ax.set_xticks(positions, [str(u) for u in order], fontsize=6, rotation=90)
    overall = codes.mean()
    mean_ax.axhline(overall, color="tab:red", linestyle="--", label=f"overall mean {overall:.3g}")
    mean_ax.legend()
    mean_ax.set_xlabel("unit (sorted by mean activation)")
    mean_ax.set_ylabel("mean activation")
    mean_ax.set_title("Mean activation per unit")
    fig.suptitle(f"Code activations of {codes.shape[0]} images, {codes.shape[1]} units")
    return fig


def digit_counts(labels, title: str = "Digits in the training set") -> Figure:
    """Bar chart of how often each digit 0..9 occurs, with the counts on the bars."""
    counts = np.bincount(pixels.check_digit_labels(labels), minlength=pixels.DIGITS)
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    bars = ax.bar(np.arange(pixels.DIGITS), counts, color=DIGIT_COLORS)
    ax.bar_label(bars, fontsize=8)
    ax.set_xticks(np.arange(pixels.DIGITS))
    ax.set_xlabel("digit")
    ax.set_ylabel("count")
    ax.set_title(f"{title} (n = {counts.sum()})")
    return fig


def occupancy_map(occ: Occupancy, train_labels) -> Figure:
    """The decoded digit over the VAE's latent square, and each digit's share of it.

    Left: ``occ.label_map`` in digit colours. Right: per digit, its share of the grid, its
    share weighted by the N(0, I) prior, and its share of the training set.
    """
    fig = _figure(10, 4.6)
    map_ax, share_ax = fig.subplots(1, 2, width_ratios=(1, 1.2))

    map_ax.imshow(
        occ.label_map,
        cmap=ListedColormap(DIGIT_COLORS),
        vmin=-0.5,
        vmax=pixels.DIGITS - 0.5,
        extent=pixels.grid_extent(len(occ.label_map), occ.limit),
        interpolation="nearest",
    )
    map_ax.set_xlabel("z[0]")
    map_ax.set_ylabel("z[1]")
    map_ax.set_title("Classified digit of each decoded grid point")
    map_ax.legend(
        handles=[Patch(color=DIGIT_COLORS[d], label=str(d)) for d in range(pixels.DIGITS)],
        title="digit",
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        fontsize=8,
    )

    rows = occ.table(train_labels)
    series = [
        ("latent_share", "latent grid", "0.2"),
        ("prior_weighted_share", "prior-weighted grid", "0.55"),
        ("train_share", "training set", "0.85"),
    ]
    width = 0.27
    for i, (key, label, color) in enumerate(series):
        share_ax.bar(
            np.arange(pixels.DIGITS) + (i - 1) * width,
            [row[key] for row in rows],
            width,
            label=label,
            color=color,
            edgecolor="black",
            linewidth=0.5,
        )
    share_ax.set_xticks(np.arange(pixels.DIGITS))
    share_ax.set_xlabel("digit")
    share_ax.set_ylabel("share")
    share_ax.set_title("Share of latent space vs. training set")
    share_ax.legend(fontsize=8)
    fig.suptitle(
        f"How much of the latent square [-{occ.limit:g}, {occ.limit:g}]² each digit occupies"
    )
    return fig
