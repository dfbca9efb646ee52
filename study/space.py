"""The search space: every range in one place, and the only caller of ``trial.suggest_*``.

Parameter names are the flat config keys, so Optuna's params, MLflow's params, the saved config
JSON and the report all say ``model.beta``. Ranges are log-uniform and wide enough to contain the
published settings (UFLDL: p = 0.1, λ = 3e-3, β = 3; NCAE: p = 0.05, β = 3, α = 3e-3) and the
notebooks' (L1 1e-7; β = 3 with Keras l2(0.003), i.e. weight decay 0.006). topk's k is
searched over all it can be, 1 … model.latent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna

from experiments.config import ExperimentConfig

SEARCHED_FAMILIES = ("sparse_l1", "sparse_kl", "ncae", "topk")
# without --family: the penalty families. topk's sparsity is k itself, and its mean activation is
# not on their scale (docs/topk.md): ask for it, best with an L0 target (--target-l0)
DEFAULT_FAMILIES = ("sparse_l1", "sparse_kl", "ncae")
PRUNERS = ("hyperband", "median", "none")  # --pruner; study/search.py makes them


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    why: str


RANGES: dict[str, Range] = {
    "model.l1": Range(1e-9, 1e-2, "L1 activity weight; the notebooks: 1e-7, 1e-4 blurry"),
    "model.beta": Range(1e-3, 10.0, "KL weight; literature 3, the notebooks found ~0.01 sharper"),
    "model.p": Range(1e-3, 0.3, "KL target activation; literature 0.05-0.1"),
    "model.weight_decay": Range(1e-7, 1e-2, "(λ/2)ΣW²; UFLDL 3e-3, the notebooks 6e-3"),
    "model.alpha": Range(1e-5, 1e-1, "NCAE nonnegativity weight; published 3e-3"),
    "train.learning_rate": Range(1e-4, 3e-2, "Adam step; 1e-3 undertrains at 50 epochs of 3,200"),
}

# topk's k: code units kept per digit, a whole number, log-uniform over 1 … model.latent (the
# whole range there is; each doubling of k, 1-2 as 16-32, gets as many draws)
K = "model.k"
FAMILY_PARAMS: dict[str, tuple[str, ...]] = {
    "sparse_l1": ("model.l1", "model.weight_decay", "train.learning_rate"),
    "sparse_kl": ("model.beta", "model.p", "model.weight_decay", "train.learning_rate"),
    "ncae": ("model.beta", "model.p", "model.alpha", "train.learning_rate"),
    "topk": (K, "train.learning_rate"),
}
SEARCHED_KEYS = ("model.family", K, *RANGES)  # a study cannot fix these with --set


def suggest(
    trial: optuna.Trial, base: ExperimentConfig, families: tuple[str, ...]
) -> ExperimentConfig:
    """A config for ``trial``: the family (if more than one), then that family's values."""
    family = (
        trial.suggest_categorical("model.family", list(families))
        if len(families) > 1
        else families[0]
    )
    values: dict[str, object] = {"model.family": family, "name": family}
    for key in FAMILY_PARAMS[family]:
        if key == K:
            values[key] = trial.suggest_int(key, 1, base.model.latent, log=True)
            continue
        r = RANGES[key]
        values[key] = trial.suggest_float(key, r.low, r.high, log=True)
    return base.replace(**values)


def check_families(base: ExperimentConfig, families: tuple[str, ...]) -> None:
    """Raise ConfigError, before anything is stored, where ``base`` does not suit one of the
    ``families``: each family's config at the low end of its ranges must be valid, as every
    trial's is then."""
    for family in families:
        low = {key: 1 if key == K else RANGES[key].low for key in FAMILY_PARAMS[family]}
        base.replace(**{"model.family": family, "name": family, **low})


def near_edge(key: str, value: float, fraction: float = 0.05) -> str | None:
    """'low'/'high' when ``value`` lies within ``fraction`` of its log range of an end; None
    for k, whose range 1 … latent has nothing beyond it."""
    if key not in RANGES:
        return None
    r = RANGES[key]
    span = math.log(r.high) - math.log(r.low)
    position = (math.log(value) - math.log(r.low)) / span
    return "low" if position < fraction else "high" if position > 1 - fraction else None
