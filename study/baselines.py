"""The comparison's baselines, given what the trials get: the study's budget and fixed settings
and a search over the learning rate.

- **Presets** (``PRESETS``): the dense autoencoder (the cost of sparsity is measured against it)
  and the notebooks' hand-tuned sparse settings. Each is the study's base config (data, split,
  code size and activation, loss, optimizer, penalty layers, decoder bound, epochs, batch size)
  with the preset's family and penalty weights. Its learning rate is chosen from ``LR_GRID``
  (points spread evenly over the study's learning-rate range, on a log scale) by the validation
  MSE with the study's seed, as a small search; the chosen rate is then trained with the same
  fresh seeds as the confirmed winners and reported as mean ± sd.
- **References** that need no training: PCA with as many components as code units (the linear
  reference) and the mean training image (a model near it has learned nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import optuna

from experiments import presets
from experiments.config import ExperimentConfig
from experiments.data import Dataset
from study.results import Seeded
from study.space import RANGES

PRESETS = {
    "ae": "dense autoencoder, no sparsity penalty",
    "sparse_kl_wd": "the notebooks' hand-tuned KL + weight decay",
    "ncae": "the notebooks' NCAE at its published settings",
}
DENSE = "ae"  # the baseline the cost of sparsity is measured against
LR_POINTS = 6  # learning rates tried per preset
ATTR = "baseline:"  # study user attr prefix: baseline:<preset>
PENALTY_KEYS = ("model.l1", "model.beta", "model.p", "model.weight_decay", "model.alpha")


def lr_grid() -> list[float]:
    """LR_POINTS learning rates, log-spaced over the study's range, rounded to 2 digits."""
    r = RANGES["train.learning_rate"]
    return [float(f"{v:.2g}") for v in np.geomspace(r.low, r.high, LR_POINTS)]


def config(base: ExperimentConfig, name: str, learning_rate: float, seed: int) -> ExperimentConfig:
    """Preset ``name`` with the study's fixed settings, at ``learning_rate`` and ``seed``."""
    preset = presets.get(name).flat()
    return base.replace(
        **{k: preset[k] for k in ("model.family", *PENALTY_KEYS)},
        **{"name": name, "train.learning_rate": learning_rate, "train.seed": seed},
    )


@dataclass(frozen=True)
class Baseline:
    """A preset with its learning rate searched and its chosen rate trained on several seeds."""

    name: str
    grid: tuple[tuple[float, float], ...]  # (learning rate, val MSE with the study's seed)
    learning_rate: float
    seeded: Seeded
    config: dict  # the flat config at the chosen rate (the study's seed)
    run_ids: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        return PRESETS[self.name]

    def to_attr(self) -> dict:
        return {
            "grid": [list(p) for p in self.grid],
            "learning_rate": self.learning_rate,
            "seeds": list(self.seeded.seeds),
            "finals": [dict(f) for f in self.seeded.finals],
            "config": self.config,
            "run_ids": list(self.run_ids),
        }

    @classmethod
    def from_attr(cls, name: str, value: dict) -> Baseline:
        return cls(
            name,
            tuple(tuple(p) for p in value["grid"]),
            value["learning_rate"],
            Seeded(tuple(value["seeds"]), tuple(value["finals"])),
            value["config"],
            tuple(value.get("run_ids", ())),
        )


def stored(study: optuna.Study, seeds: tuple[int, ...] | None = None) -> dict[str, Baseline]:
    """The baselines stored with the study (those trained on ``seeds``, if given)."""
    out = {}
    for name in PRESETS:
        value = study.user_attrs.get(ATTR + name)
        if value is not None and (seeds is None or tuple(value["seeds"]) == seeds):
            out[name] = Baseline.from_attr(name, value)
    return out


@dataclass(frozen=True)
class Reference:
    """A model that needs no training: its val/test MSE and FVU."""

    name: str
    description: str
    val_mse: float
    test_mse: float
    test_fvu: float


def references(data: Dataset, latent: int, seed: int) -> list[Reference]:
    """PCA with ``latent`` components and the mean training image, on the same splits."""
    from sklearn.decomposition import PCA

    from experiments.metrics import summarize

    def measured(reconstruct) -> tuple[float, float, float]:
        val = summarize(data.x_val, reconstruct(data.x_val), None, bce=False)
        test = summarize(data.x_test, reconstruct(data.x_test), None, bce=False)
        return float(val["mse"]), float(test["mse"]), float(test["fvu"])

    pca = PCA(n_components=min(latent, *data.x_train.shape), random_state=seed).fit(data.x_train)
    mean = data.x_train.mean(axis=0, keepdims=True)  # (1, 784)
    return [
        Reference(
            f"PCA, {pca.n_components_} components",
            "linear reference (scikit-learn)",
            *measured(lambda x: pca.inverse_transform(pca.transform(x))),
        ),
        Reference(
            "mean training image",
            "the same image for every digit: learned nothing",
            *measured(lambda x: np.broadcast_to(mean, x.shape)),
        ),
    ]
