"""Shared fixtures: a tiny dataset, a tiny config, a temporary tracking store, a reported study."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter out
import numpy as np
import pytest
from servers import MlflowServer, Postgres, ServerUnavailable, unavailable

from experiments import data as data_module
from experiments.packed import tf_cache_flags
from experiments.presets import PRESETS

# what XLA compiles is kept on disk where a study runs (experiments.packed.use_compile_cache):
# in the tests, in a folder of this test run, removed at its end, not in the user's cache
_XLA_CACHE = tempfile.mkdtemp(prefix="sae-tests-xla-")
atexit.register(shutil.rmtree, _XLA_CACHE, True)
os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
os.environ["TF_XLA_FLAGS"] = tf_cache_flags(_XLA_CACHE)


@pytest.fixture(scope="session")
def tiny_data() -> data_module.Dataset:
    """A few hundred real MNIST-5k digits: 300 train, 100 val, 200 test."""
    full = data_module.load("mnist-5k")
    return data_module.Dataset(
        "mnist-5k-tiny",
        full.x_train[:300],
        full.y_train[:300],
        full.x_val[:100],
        full.y_val[:100],
        full.x_test[:200],
        full.y_test[:200],
        content_hash="tiny",
    )


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory, tiny_data) -> str:
    """The tiny dataset as an ``npz:PATH`` source, for the command line."""
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    to_uint8 = lambda x: np.round(x * 255).astype(np.uint8).reshape(-1, 28, 28)  # noqa: E731
    np.savez(
        path,
        x_train=to_uint8(np.concatenate([tiny_data.x_train, tiny_data.x_val])),
        y_train=np.concatenate([tiny_data.y_train, tiny_data.y_val]),
        x_test=to_uint8(tiny_data.x_test),
        y_test=tiny_data.y_test,
    )
    return f"npz:{path}"


def tiny(name: str, **flat):
    """A preset shrunk to a test budget: 2 epochs, batch 64, plus ``flat`` overrides."""
    return PRESETS[name].replace(**{"train.epochs": 2, "train.batch_size": 64, **flat})


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch) -> str:
    """A fresh SQLite tracking store under tmp_path, also set as $MLFLOW_TRACKING_URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def reported_study(tmp_path_factory, tiny_npz):
    """A small tracked study on the tiny data (two families, six trials of two epochs) and its
    report, shared by the report and browser tests. Its name holds markup, which every page
    must show as text."""
    from study.cli import main

    root = tmp_path_factory.mktemp("reported")
    study = SimpleNamespace(
        name='<i>tiny</i> & "co"',
        storage=f"journal:{root / 'optuna.log'}",
        uri=f"sqlite:///{root / 'mlflow.db'}",
        folder=root / "report",
    )
    study.where = [
        "--study-name",
        study.name,
        "--storage",
        study.storage,
        "--tracking-uri",
        study.uri,
    ]
    assert (
        main(
            [
                "run",
                "--family",
                "sparse_kl",
                "ncae",
                "--data",
                tiny_npz,
                "--epochs",
                "2",
                "--n-trials",
                "6",
                "--pruner",
                "none",
                "--target",
                "1.0",
                "--confirm-top",
                "2",
                "--confirm-seeds",
                "2",
                "--set",
                "train.batch_size=64",
                *study.where,
            ]
        )
        == 0
    )
    assert main(["report", *study.where, "--out", str(study.folder)]) == 0
    return study


@pytest.fixture(scope="session")
def postgres():
    """A throw-away PostgreSQL cluster on 127.0.0.1 (password in ``.password``); the tests that
    need it are skipped, with the reason, where the server cannot be started (in CI: failed)."""
    try:
        cluster = Postgres()
    except ServerUnavailable as err:
        unavailable(f"PostgreSQL cannot be started here: {err}")
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def mlflow_server(postgres, tmp_path_factory):
    """An MLflow tracking server on 127.0.0.1 with its backend store in PostgreSQL (credentials
    from $PGPASSWORD in its environment only) and an artefact root of its own."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(
        postgres.create_database("mlflow"),
        folder / "artifacts",
        env=os.environ | {"PGPASSWORD": postgres.password},
        log=folder / "server.log",
    )
    yield server
    server.stop()
