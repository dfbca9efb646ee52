"""The notebooks' autoencoders, built from a plain config: ``build(cfg) -> keras.Model`` (compiled).

Every model holds two named sub-models, ``encoder`` and ``decoder``, so codes can be drawn
and decoded on their own (``encode``/``decode``/``reconstruct`` below). Metric names are the
contract that callbacks, pruning and tracking read: every model reports ``loss`` and ``mse``
(per-pixel reconstruction MSE), the VAE also ``reconstruction_loss`` and ``kl_loss``.

Model code uses ``keras.ops`` only, so it runs on TensorFlow, JAX and PyTorch.
"""

from __future__ import annotations

import random

import keras
import numpy as np
from keras import ops

from experiments import losses, topk
from experiments.config import ExperimentConfig
from experiments.regularizers import ActivityPenalty, NonNegativity, WeightDecay

PIXELS = 784  # 28 x 28, flattened


@keras.saving.register_keras_serializable(package="sae")
def half_sse(x, x_hat):
    """What models saved before ``Reconstruction`` name as their half_sse loss; they still load."""
    return losses.half_sse(x, x_hat)


@keras.saving.register_keras_serializable(package="sae")
class Reconstruction(keras.losses.Loss):
    """The reconstruction loss ``train.loss`` of ``losses.RECONSTRUCTION``, per sample."""

    def __init__(self, kind: str = "mse", **kwargs):
        super().__init__(**{"name": kind, **kwargs})
        self.kind = kind

    def call(self, y_true, y_pred):
        return losses.RECONSTRUCTION[self.kind](y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


def _optimizer(cfg: ExperimentConfig) -> keras.optimizers.Optimizer:
    if cfg.train.optimizer == "adadelta":
        return keras.optimizers.Adadelta(learning_rate=cfg.train.learning_rate)
    return keras.optimizers.Adam(learning_rate=cfg.train.learning_rate)


def _kernel_penalty(cfg: ExperimentConfig):
    m = cfg.model
    if m.family == "ncae" and m.alpha > 0:
        return NonNegativity(m.alpha)
    if m.weight_decay > 0:
        return WeightDecay(m.weight_decay)
    return None


def decoder_constraint(cfg: ExperimentConfig) -> keras.constraints.Constraint | None:
    """What bounds each code unit's decoder weights (axis 1 of the kernel (latent, 784)): topk
    renormalises them to exactly unit norm (``topk.DECODER_NORM``) after every step, as Gao et
    al. do, whatever ``model.decoder_norm`` says; the other families' are bounded by
    ``model.decoder_norm`` (0: not bounded)."""
    m = cfg.model
    if m.family == "topk":
        return keras.constraints.MinMaxNorm(topk.DECODER_NORM, topk.DECODER_NORM, rate=1.0, axis=1)
    if m.decoder_norm <= 0:
        return None
    return keras.constraints.MaxNorm(m.decoder_norm, axis=1)


def _initializers(seed: int):
    """Each Dense layer's kernel initializer, in the order the layers are made, seeded from
    ``seed`` alone: the draws ``keras.utils.set_random_seed(seed)`` followed by default
    initializers would make, without touching the process's random state."""
    draws = random.Random(seed)
    while True:
        yield keras.initializers.GlorotUniform(seed=draws.randint(1, int(1e9)))


def initial_weights(cfg: ExperimentConfig) -> list[np.ndarray]:
    """The weights an autoencoder of ``cfg`` (not the VAE) starts from, as ``get_weights()``
    lists them: each kernel drawn by its seeded initializer (``_initializers``), zero biases,
    and topk's decoder columns at unit norm (where every step leaves them). They depend on the
    seed and the family alone; no model is built (a pack starts its slots from them)."""
    m = cfg.model
    init = _initializers(cfg.train.seed)
    encoder, decoder = next(init)((PIXELS, m.latent)), next(init)((m.latent, PIXELS))
    if m.family == "topk":
        constraint = decoder_constraint(cfg)
        assert constraint is not None
        decoder = constraint(decoder)
    weights = (encoder, np.zeros(m.latent), decoder, np.zeros(PIXELS))
    return [np.asarray(ops.convert_to_numpy(w), "float32") for w in weights]


def _build_autoencoder(
    cfg: ExperimentConfig, weights: list[np.ndarray] | None = None
) -> keras.Model:
    m = cfg.model
    penalty = _kernel_penalty(cfg)
    pixels = keras.Input((PIXELS,), name="pixels")
    # the weights are set below: ``weights``, or initial_weights
    code = keras.layers.Dense(
        m.latent,
        activation=m.activation,
        kernel_regularizer=penalty,
        kernel_initializer="zeros",
        name="code",
    )(pixels)
    if m.family == "topk":
        code = topk.TopK(m.k, name="top_k")(code)
    code = ActivityPenalty(l1=m.l1, beta=m.beta, p=m.p, reduction=m.kl_reduction, name="sparsity")(
        code
    )
    encoder = keras.Model(pixels, code, name="encoder")

    latent = keras.Input((m.latent,), name="latent")
    decoded = keras.layers.Dense(
        PIXELS,
        activation="sigmoid",
        name="reconstruction",
        kernel_initializer="zeros",
        kernel_regularizer=penalty if m.penalty_layers == "both" else None,
        kernel_constraint=decoder_constraint(cfg),
    )(latent)
    decoder = keras.Model(latent, decoded, name="decoder")

    model = keras.Model(pixels, decoder(encoder(pixels)), name=m.family)
    model.set_weights(initial_weights(cfg) if weights is None else weights)
    model.compile(
        optimizer=_optimizer(cfg),
        loss=Reconstruction(cfg.train.loss),
        metrics=[keras.metrics.MeanSquaredError(name="mse")],
    )
    return model


@keras.saving.register_keras_serializable(package="sae")
class Sampling(keras.layers.Layer):
    """z = mean + exp(log_variance / 2) · eps: the notebooks' fix of the blog's log_sigma mix-up."""

    def __init__(self, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_variance = inputs
        eps = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(z_log_variance / 2) * eps

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="sae")
class VAE(keras.Model):
    """The Keras blog VAE as the notebooks adapted it.

    loss = BCE summed over the 784 pixels + KL(q(z|x) ‖ N(0, I)) summed over latent dims,
    averaged over the batch. Loss and metrics are computed in ``compute_loss`` and
    ``compute_metrics`` rather than a custom ``train_step``: Keras 3 calls both from every
    backend's own train and test steps, so the one implementation serves TF, JAX and PyTorch.
    """

    def __init__(self, encoder, decoder, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.decoder, self.seed = encoder, decoder, seed
        self.sampling = Sampling(seed=seed, name="sampling")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")
        self.mse_tracker = keras.metrics.Mean(name="mse")

    def call(self, x, training=False):
        z_mean, z_log_variance = self.encoder(x, training=training)
        z = self.sampling([z_mean, z_log_variance])
        return self.decoder(z, training=training), z_mean, z_log_variance

    @staticmethod
    def _terms(x, y_pred):
        x_hat, z_mean, z_log_variance = y_pred
        # BCE summed over the pixels: the blog's mean BCE x original_dim
        reconstruction = ops.mean(PIXELS * losses.binary_crossentropy(x, x_hat))
        kl = ops.mean(
            -0.5
            * ops.sum(1 + z_log_variance - ops.square(z_mean) - ops.exp(z_log_variance), axis=-1)
        )
        mse = ops.mean(losses.squared_error(x, x_hat))
        return reconstruction, kl, mse

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        reconstruction, kl, _ = self._terms(x, y_pred)
        total = reconstruction + kl
        if self.losses:
            total = total + ops.sum(self.losses)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        reconstruction, kl, mse = self._terms(x, y_pred)
        self.reconstruction_tracker.update_state(reconstruction)
        self.kl_tracker.update_state(kl)
        self.mse_tracker.update_state(mse)
        return self.get_metrics_result()

    def get_config(self):
        return {
            **super().get_config(),
            "seed": self.seed,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
        }

    @classmethod
    def from_config(cls, config):
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        decoder = keras.saving.deserialize_keras_object(config.pop("decoder"))
        return cls(encoder, decoder, **config)


def _build_vae(cfg: ExperimentConfig) -> keras.Model:
    m = cfg.model
    init = _initializers(cfg.train.seed)
    pixels = keras.Input((PIXELS,), name="pixels")
    h = keras.layers.Dense(
        m.hidden, activation="relu", kernel_initializer=next(init), name="hidden"
    )(pixels)
    z_mean = keras.layers.Dense(m.latent, kernel_initializer=next(init), name="z_mean")(h)
    z_log_variance = keras.layers.Dense(
        m.latent, kernel_initializer=next(init), name="z_log_variance"
    )(h)
    encoder = keras.Model(pixels, [z_mean, z_log_variance], name="encoder")

    latent = keras.Input((m.latent,), name="latent")
    h = keras.layers.Dense(
        m.hidden, activation="relu", kernel_initializer=next(init), name="hidden"
    )(latent)
    decoded = keras.layers.Dense(
        PIXELS, activation="sigmoid", kernel_initializer=next(init), name="reconstruction"
    )(h)
    decoder = keras.Model(latent, decoded, name="decoder")

    model = VAE(encoder, decoder, seed=cfg.train.seed, name="vae")
    model.compile(optimizer=_optimizer(cfg))
    model(np.zeros((1, PIXELS), "float32"))  # build the weights now
    return model


def build(cfg: ExperimentConfig) -> keras.Model:
    """A compiled model for ``cfg``; its weights depend only on ``cfg.train.seed`` (the process's
    random state is neither read nor changed)."""
    if cfg.model.family == "vae":
        return _build_vae(cfg)
    return _build_autoencoder(cfg)


def trained(cfg: ExperimentConfig, weights: list[np.ndarray]) -> keras.Model:
    """The model ``build(cfg)`` makes, holding ``weights`` (a packed slot's)."""
    if cfg.model.family == "vae":
        raise ValueError("the VAE is not packed: build it with build(cfg)")
    return _build_autoencoder(cfg, weights)


def _submodel(model: keras.Model, name: str) -> keras.Model:
    return (
        model.encoder
        if isinstance(model, VAE) and name == "encoder"
        else (model.decoder if isinstance(model, VAE) else model.get_layer(name))
    )


def _apply(submodel: keras.Model, x: np.ndarray, chunk: int) -> np.ndarray:
    # a direct call in chunks: for these small models predict()'s per-call overhead is ~20x the
    # arithmetic, and the validation split is measured after every epoch
    parts = []
    for start in range(0, len(x), chunk):
        out = submodel(np.asarray(x[start : start + chunk], "float32"), training=False)
        parts.append(ops.convert_to_numpy(out[0] if isinstance(out, (list, tuple)) else out))
    return np.concatenate(parts)


def encode(model: keras.Model, x: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Codes (n, latent); for the VAE the posterior mean."""
    return _apply(_submodel(model, "encoder"), x, chunk)


def decode(model: keras.Model, z: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Images (n, 784) from codes (n, latent)."""
    return _apply(_submodel(model, "decoder"), z, chunk)


def decoder_kernel(model: keras.Model) -> np.ndarray | None:
    """The decoder's weights (units, 784) of a one-layer decoder: row j is code unit j's
    contribution to the output's logits. None for the VAE, whose decoder has a hidden layer."""
    if isinstance(model, VAE):
        return None
    return np.asarray(model.get_layer("decoder").get_layer("reconstruction").kernel)


def encoder_kernel(model: keras.Model) -> np.ndarray:
    """The first encoder layer's weights (784, units): the receptive fields."""
    encoder = _submodel(model, "encoder")
    dense = next(layer for layer in encoder.layers if isinstance(layer, keras.layers.Dense))
    return np.asarray(dense.kernel)


# Keras 3's saving_lib.get_attr_skipset looks its cache up under "saving_attr_skiplist_<type>"
# but stores it under "saving_attr_skipset_<type>": it never hits, and every save builds fresh
# reference Layer, Optimizer and Metric objects to list their attributes, 40 % of saving these
# models (a study saves one per finished trial). ``save`` stores them under the key it reads.
_SKIP_READ, _SKIP_WRITTEN = "saving_attr_skiplist_", "saving_attr_skipset_"
_SKIP_TYPES = ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer", "Loss")


def save(model: keras.Model, path) -> None:
    """``model.save(path)``, with Keras's cache of what saving skips made to work (above)."""
    model.save(path)
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # another Keras layout: saving works, only slower
        return
    for kind in _SKIP_TYPES:
        found = global_state.get_global_attribute(_SKIP_WRITTEN + kind)
        if found is not None and global_state.get_global_attribute(_SKIP_READ + kind) is None:
            global_state.set_global_attribute(_SKIP_READ + kind, found)
