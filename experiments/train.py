"""Training: ``fit`` runs Keras's fit and, after every epoch, measures the validation split and
hands the numbers to plain callables ``on_epoch(epoch, metrics)``; pruning and tracking plug in
there without this module knowing about Optuna or MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import keras
import numpy as np

from experiments import metrics, models
from experiments.config import ExperimentConfig
from experiments.data import Dataset

EpochHook = Callable[[int, dict[str, float]], None]


class TrainingDiverged(RuntimeError):
    """The loss or a validation measure became NaN or infinite."""


def evaluate_split(model: keras.Model, x: np.ndarray, prefix: str) -> dict[str, float]:
    """All measures of ``metrics.summarize`` on one split, keys prefixed (``val_mse``, ...)."""
    codes = models.encode(model, x)
    x_hat = models.decode(model, codes)
    return {f"{prefix}_{k}": v for k, v in metrics.summarize(x, x_hat, codes).items()}


class _EpochEnd(keras.callbacks.Callback):
    def __init__(self, x_val: np.ndarray, hooks: Sequence[EpochHook]):
        super().__init__()
        self.x_val, self.hooks = x_val, hooks

    def on_epoch_end(self, epoch, logs=None):
        values = {k: float(v) for k, v in (logs or {}).items()}
        values.update(evaluate_split(self.model, self.x_val, "val"))
        for hook in self.hooks:
            hook(epoch + 1, values)  # 1-based: "after epoch 1"
        bad = sorted(k for k, v in values.items() if not math.isfinite(v) and k != "val_hoyer")
        if bad:
            raise TrainingDiverged(f"{bad[0]} became {values[bad[0]]} at epoch {epoch + 1}")


def fit(model: keras.Model, data: Dataset, cfg: ExperimentConfig,
        on_epoch: Sequence[EpochHook] = ()) -> dict[str, list[float]]:
    """Train ``model`` on the training split; returns the per-epoch history, validation
    measures included. Raises TrainingDiverged as soon as an epoch ends non-finite."""
    history: dict[str, list[float]] = {}

    def record(epoch: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            history.setdefault(k, []).append(v)

    model.fit(
        data.x_train, data.x_train,
        epochs=cfg.train.epochs,
        batch_size=cfg.train.batch_size,
        shuffle=True,  # batch order comes from the global seed set by models.build
        verbose=0,
        # TerminateOnNaN stops mid-epoch; _EpochEnd then logs the epoch and raises
        callbacks=[keras.callbacks.TerminateOnNaN(), _EpochEnd(data.x_val, [record, *on_epoch])],
    )
    return history


def history_csv(history: dict[str, list[float]]) -> str:
    """The history as CSV text, one row per epoch."""
    keys = sorted(history)
    rows = [",".join(["epoch", *keys])]
    for i in range(len(history[keys[0]]) if keys else 0):
        rows.append(",".join([str(i + 1), *(repr(history[k][i]) for k in keys)]))
    return "\n".join(rows) + "\n"
