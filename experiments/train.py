"""Training: ``fit`` trains one config and, after every epoch, hands the numbers to plain callables
``on_epoch(epoch, metrics)``; pruning and tracking plug in there without this module knowing about
Optuna or MLflow.

The autoencoders train as a pack of one (experiments/packed.py: compiled, one execution per
epoch); the VAE with Keras's ``fit`` on the plain model (``fit_plain``). The per-epoch
validation measures leave out the cross-entropy (a logarithm per pixel, as costly as the epoch's
training on small data); the final measures of a run include it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import keras
import numpy as np

from experiments import metrics, models
from experiments.config import ExperimentConfig
from experiments.data import Dataset
from experiments.packed import PackedTrainer

EpochHook = Callable[[int, dict[str, float]], None]


class TrainingDiverged(RuntimeError):
    """The loss or a validation measure became NaN or infinite."""


class History(dict):
    """Per-epoch values by name (``{"val_mse": [...], ...}``); an ``EpochHook`` that records."""

    def __call__(self, epoch: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.setdefault(k, []).append(v)


def evaluate_split(
    model: keras.Model, x: np.ndarray, prefix: str, bce: bool = True
) -> dict[str, float]:
    """All measures of ``metrics.summarize`` on one split, keys prefixed (``val_mse``, ...)."""
    codes = models.encode(model, x)
    x_hat = models.decode(model, codes)
    kernel = models.decoder_kernel(model)
    scale = None if kernel is None else metrics.unit_scale(kernel)
    return {
        f"{prefix}_{k}": float(v)  # a plain model: one value per measure
        for k, v in metrics.summarize(x, x_hat, codes, scale, bce=bce).items()
    }


def check_finite(epoch: int, values: dict[str, float]) -> None:
    """Raise TrainingDiverged if a loss or measure is NaN or infinite (Hoyer may be NaN)."""
    bad = sorted(k for k, v in values.items() if not math.isfinite(v) and k != "val_hoyer")
    if bad:
        raise TrainingDiverged(f"{bad[0]} became {values[bad[0]]} at epoch {epoch}")


class _EpochEnd(keras.callbacks.Callback):
    def __init__(self, x_val: np.ndarray, hooks: Sequence[EpochHook]):
        super().__init__()
        self.x_val, self.hooks = x_val, hooks

    def on_epoch_end(self, epoch, logs=None):
        values = {k: float(v) for k, v in (logs or {}).items()}
        values.update(evaluate_split(self.model, self.x_val, "val", bce=False))
        for hook in self.hooks:
            hook(epoch + 1, values)  # 1-based: "after epoch 1"
        check_finite(epoch + 1, values)


def fit_plain(cfg: ExperimentConfig, data: Dataset, hooks: Sequence[EpochHook]) -> keras.Model:
    """Keras's ``fit`` on the plain model, one step per execution as compiled by default: the
    VAE's trainer, and the way the notebooks train (``make bench``'s baseline)."""
    model = models.build(cfg)
    keras.utils.set_random_seed(cfg.train.seed)  # fit draws its batch order from the global seed
    model.fit(
        data.x_train,
        data.x_train,
        epochs=cfg.train.epochs,
        batch_size=cfg.train.batch_size,
        shuffle=True,
        verbose=0,
        # TerminateOnNaN stops mid-epoch; _EpochEnd then logs the epoch and raises
        callbacks=[keras.callbacks.TerminateOnNaN(), _EpochEnd(data.x_val, hooks)],
    )
    return model


def _fit_autoencoder(
    cfg: ExperimentConfig, data: Dataset, hooks: Sequence[EpochHook]
) -> keras.Model:
    trainer = PackedTrainer(cfg, data, slots=1)
    trainer.assign(0, cfg)
    trained = []

    def each(results) -> None:
        epoch, values = results[0]
        for hook in hooks:
            hook(epoch, values)
        check_finite(epoch, values)
        if epoch == cfg.train.epochs:
            trained.append(trainer.export(0))

    trainer.run(each)
    return trained[0]


def fit(
    cfg: ExperimentConfig, data: Dataset, on_epoch: Sequence[EpochHook] = ()
) -> tuple[keras.Model, History]:
    """Train ``cfg`` on the training split; returns the trained model and the per-epoch history,
    validation measures included. Raises TrainingDiverged as soon as an epoch ends non-finite."""
    history = History()
    train = fit_plain if cfg.model.family == "vae" else _fit_autoencoder
    return train(cfg, data, [history, *on_epoch]), history


def history_csv(history: dict[str, list[float]]) -> str:
    """The history as CSV text, one row per epoch."""
    keys = sorted(history)
    rows = [",".join(["epoch", *keys])]
    for i in range(len(history[keys[0]]) if keys else 0):
        rows.append(",".join([str(i + 1), *(repr(history[k][i]) for k in keys)]))
    return "\n".join(rows) + "\n"
