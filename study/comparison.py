"""The report's comparison: the study's best trials beside the plain autoencoder, the seed's
hand-tuned sparse settings, PCA and the mean image, all measured on the same test split.

The presets are trained here with the study's data and budget (BUDGET_KEYS); every other setting
is the preset's, so the table shows what the search bought over the settings the seed notebooks
chose by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from optuna.trial import FrozenTrial

from experiments import presets
from experiments.data import Dataset

BASELINES = {"ae": "plain autoencoder", "sparse_kl_wd": "seed's hand-tuned KL + weight decay",
             "ncae": "seed's hand-tuned NCAE (published settings)"}
# what the baselines share with the study, so every row saw the same data and training budget
BUDGET_KEYS = ("data.name", "data.val_fraction", "data.seed", "model.latent", "train.epochs",
               "train.batch_size", "train.seed")
MEASURES = ("mse", "mean_activation", "active_fraction", "hoyer")


@dataclass(frozen=True)
class Row:
    """One line of the table: validation MSE and the measures on the test split."""

    model: str
    chosen: str
    val_mse: float
    test: dict[str, float]  # MEASURES; NaN where a model has no code (PCA, the mean image)


def measures(values: dict, split: str) -> dict[str, float]:
    """MEASURES of ``split`` ("val", "test") from a trial's user attrs or a run's final values."""
    return {k: float(values.get(f"{split}_{k}", math.nan)) for k in MEASURES}


def trial_rows(best: dict[str, FrozenTrial], overall: FrozenTrial | None) -> list[Row]:
    """The best feasible trial of each family, as the study measured it."""
    return [Row(f"best {family}" + (" (best overall)" if t is overall else ""),
                f"study trial {t.number}", t.user_attrs["val_mse"], measures(t.user_attrs, "test"))
            for family, t in best.items()]


def baseline_rows(spec: dict, data: Dataset, say=print) -> list[Row]:
    """Train the BASELINES with the study's budget; PCA with as many components as code units;
    the mean training image (the last row: a model near it has learned nothing)."""
    from sklearn.decomposition import PCA

    from experiments.metrics import mse
    from experiments.runner import train_and_evaluate

    budget = {k: spec[k] for k in BUDGET_KEYS}
    rows = []
    for name, what in BASELINES.items():
        cfg = presets.get(name).replace(**budget)
        say(f"training baseline {name} ({cfg.train.epochs} epochs) ...")
        final = train_and_evaluate(cfg, data).final
        rows.append(Row(f"`{name}` preset", what, final["val_mse"], measures(final, "test")))
    no_code = {"mean_activation": math.nan, "active_fraction": math.nan, "hoyer": math.nan}
    pca = PCA(n_components=min(int(spec["model.latent"]), *data.x_train.shape),
              random_state=int(spec["data.seed"])).fit(data.x_train)

    def pca_mse(x: np.ndarray) -> float:
        return mse(x, pca.inverse_transform(pca.transform(x)))

    rows.append(Row(f"PCA, {pca.n_components_} components", "linear reference (scikit-learn)",
                    pca_mse(data.x_val), {"mse": pca_mse(data.x_test), **no_code}))
    mean = data.x_train.mean(axis=0, keepdims=True)  # (1, 784)
    rows.append(Row("mean training image", "predicts the same image for every digit",
                    mse(data.x_val, np.broadcast_to(mean, data.x_val.shape)),
                    {"mse": mse(data.x_test, np.broadcast_to(mean, data.x_test.shape)),
                     **no_code}))
    return rows
