"""The private surfaces of Optuna and Keras this project relies on, where no public API does the
job. Each check names the module that needs it, so an upgrade that removes one fails here, in
one clear line, instead of deep inside a study. pyproject.toml bounds both to tested versions."""

import keras
import numpy as np
import optuna
import pytest

NEEDS = "{what} is gone in {lib} {version}: {user} relies on it; pin {lib} to a tested version"


def _has(obj, name: str, what: str, lib, user: str) -> None:
    assert hasattr(obj, name), NEEDS.format(
        what=what, lib=lib.__name__, user=user, version=lib.__version__
    )


def test_optuna_private_surface():
    from optuna.storages import RDBStorage

    try:
        from optuna.storages._heartbeat import BaseHeartbeat
    except ImportError:
        pytest.fail(
            NEEDS.format(
                what="optuna.storages._heartbeat.BaseHeartbeat",
                lib="optuna",
                version=optuna.__version__,
                user="study/storage.py",
            )
        )
    _has(
        BaseHeartbeat, "record_heartbeat", "BaseHeartbeat.record_heartbeat", optuna, "study/loop.py"
    )
    _has(
        RDBStorage,
        "_get_stale_trial_ids",
        "RDBStorage._get_stale_trial_ids",
        optuna,
        "study/storage.py (WorkerStorage passes it through)",
    )
    study = optuna.create_study()
    _has(study, "_storage", "Study._storage", optuna, "study/loop.py and study/workers.py")
    trial = study.ask()
    _has(trial, "_trial_id", "Trial._trial_id", optuna, "study/loop.py")
    _has(study.trials[0], "_trial_id", "FrozenTrial._trial_id", optuna, "study/workers.py")


def test_keras_adam_private_surface():
    """experiments/slots.py's per-slot Adam reads its moments as Keras's Adam keeps them."""
    weights = keras.Variable(np.zeros((2, 3), "float32"))
    opt = keras.optimizers.Adam()
    opt.build([weights])
    for name in ("_get_variable_index", "_momentums", "_velocities"):
        _has(opt, name, f"Adam.{name}", keras, "experiments/slots.py (SlotAdam)")
    index = opt._get_variable_index(weights)
    assert tuple(opt._momentums[index].shape) == tuple(opt._velocities[index].shape) == (2, 3)
