"""The notebooks' experiments, and the k-sparse autoencoder beside them, each a small diff
from the defaults in ``config.py``.

``python -m experiments list`` prints them; ``python -m experiments run NAME`` runs one.
"""

from __future__ import annotations

from experiments.config import ConfigError, ExperimentConfig

DEFAULT = ExperimentConfig()

PRESETS: dict[str, ExperimentConfig] = {
    # the Keras blog VAE: 2 latent variables so the latent space can be drawn without reduction
    "vae": DEFAULT.replace(
        **{"name": "vae", "model.family": "vae", "model.latent": 2, "model.decoder_norm": 0.0}
    ),  # its decoder is not one layer
    # the notebooks' "ordinary" autoencoder with 32 code units
    "ae": DEFAULT,
    # the notebooks' L1 activity regularizer: 1e-7 stays sharp ("10e-5 is blurry")
    "sparse_l1": DEFAULT.replace(
        **{"name": "sparse_l1", "model.family": "sparse_l1", "model.l1": 1e-7}
    ),
    # Ng's KL sparsity at the literature's p = 0.05, beta = 3: the notebooks found it blurry
    "sparse_kl": DEFAULT.replace(
        **{"name": "sparse_kl", "model.family": "sparse_kl", "model.p": 0.05, "model.beta": 3.0}
    ),
    # the notebooks' fix: the same KL plus kernel_regularizer=l2(0.003) on the encoder. Keras's
    # l2(0.003) adds 0.003·ΣW², which is (lambda/2)·ΣW² with lambda = 0.006
    "sparse_kl_wd": DEFAULT.replace(
        **{
            "name": "sparse_kl_wd",
            "model.family": "sparse_kl",
            "model.p": 0.05,
            "model.beta": 3.0,
            "model.weight_decay": 0.006,
        }
    ),
    # Hosseini-Asl et al.'s NCAE on MNIST: p = 0.05, beta = 3, alpha = 0.003
    "ncae": DEFAULT.replace(
        **{
            "name": "ncae",
            "model.family": "ncae",
            "model.p": 0.05,
            "model.beta": 3.0,
            "model.alpha": 0.003,
        }
    ),
    # the k-sparse autoencoder (Gao et al. 2024): the 8 largest of 32 units per digit, decoder
    # columns held at unit norm (whatever model.decoder_norm says), no penalty to tune; 1e-2
    # measured best of 1e-3 … 3e-2
    "topk": DEFAULT.replace(
        **{"name": "topk", "model.family": "topk", "model.k": 8, "train.learning_rate": 0.01}
    ),
}
# what ``run --all`` (make experiments) runs: the notebooks' experiments, not topk
NOTEBOOKS = ("vae", "ae", "sparse_l1", "sparse_kl", "sparse_kl_wd", "ncae")


def get(name: str) -> ExperimentConfig:
    """The preset called ``name``; ConfigError lists the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(PRESETS)}") from None
