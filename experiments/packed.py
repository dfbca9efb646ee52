"""Several autoencoders trained as one Keras model: the project's trainer for every non-VAE run.

These autoencoders are tiny (784-32-784): trained one by one, time goes to per-step overhead, not
arithmetic. A ``PackedTrainer`` holds K *slots*, each one trial: weights stacked along a leading
slot axis, one batched matmul (einsum) per layer, each slot's hyperparameters (L1 λ, β, p, weight
decay, α, topk's k, the bounds on its decoder columns' norms, learning rate) as per-slot tensors,
and the loss the sum of the slots' own losses, so each slot's gradients are its own. Nothing
couples the slots: a slot follows the per-epoch losses of the same trial trained alone (K = 1) up
to floating-point rounding.

How it stays fast and exact:
- The training images live on the device (a non-trainable variable). Each slot has its own
  permutation of them per epoch, drawn from ``numpy.random.default_rng(train.seed)``: slot k's
  batches are exactly the ones the same trial gets alone, whenever it joined the pack.
- ``fit`` runs one Keras epoch per pass over the training set, compiled (``jit_compile``) with
  ``steps_per_execution`` covering the whole pass on TensorFlow and JAX (PyTorch refuses more than
  one step per execution), so Python runs once per epoch: that is when the per-epoch validation
  measures are taken and handed to the caller. A short last batch is padded to the full size
  with rows weighted 0 in every mean, so all steps have one shape and compile once.
- Per-slot Adam with its own step count (bias correction) and learning rate, so a slot freed by a
  pruned trial can take a new trial at an epoch boundary and train it as if it were alone.

Slot weights start as ``models.build(cfg)``'s (``models.initial_weights``, drawn without building
a model), and ``export`` gives a slot back as the same plain autoencoder, so saved models,
figures and retraining all see an ordinary Keras model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
from keras import ops

from experiments import losses, models
from experiments.config import ExperimentConfig
from experiments.data import Dataset
from experiments.pack_measures import PackMeasures
from experiments.slots import OPTIMIZERS, Rows, SlotDecoderNorm, SlotMean, host_zeros
from experiments.topk import DECODER_NORM, keep_top_k

PIXELS = models.PIXELS
# what may differ between the slots of one pack; every other config value is the pack's own
SLOT_FIELDS = (
    "name",
    "model.family",
    "model.l1",
    "model.beta",
    "model.p",
    "model.weight_decay",
    "model.alpha",
    "model.k",
    "train.learning_rate",
    "train.epochs",
    "train.seed",
)
# per-slot model tensors; k is the code units a slot keeps per sample (all but topk's: latent)
HYPER = ("l1", "beta", "p", "weight_decay", "alpha", "k", "active")

# slot -> (epochs the slot has trained, its measures after that epoch)
EpochResults = dict[int, tuple[int, dict[str, float]]]


class PackError(ValueError):
    """A config that cannot join the pack (a VAE, or a fixed value that differs)."""


def backend_compiles() -> bool:
    """Whether this backend runs compiled multi-step executions (TensorFlow and JAX do)."""
    return keras.backend.backend() in ("tensorflow", "jax")


TF_CACHE_FLAG = "--tf_xla_persistent_cache_directory"  # TensorFlow's, in TF_XLA_FLAGS


def tf_cache_flags(folder: str | Path) -> str:
    """TF_XLA_FLAGS as they are now, with TensorFlow's XLA compilation cache in ``folder`` (a
    folder they named before replaced)."""
    kept = [
        f for f in os.environ.get("TF_XLA_FLAGS", "").split() if not f.startswith(TF_CACHE_FLAG)
    ]
    return " ".join([*kept, f"{TF_CACHE_FLAG}={folder}"])


def use_compile_cache() -> None:
    """Keep what XLA compiles on disk, in ``$XDG_CACHE_HOME/sae-study/<backend>`` (default
    ``~/.cache``): a pack's training step and measures are compiled once per machine and shape,
    not once per process (every study, worker and confirmation starts one): on JAX its
    persistent compilation cache (unless JAX_COMPILATION_CACHE_DIR names another folder), on
    TensorFlow XLA's (unless TF_XLA_FLAGS names one), in a folder of its version, since its
    entries do not name it. Call it before anything compiles; TensorFlow reads the setting at
    its first operation, and ignores it after. Nothing on other backends."""
    backend = keras.backend.backend()
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "sae-study")
    if backend == "tensorflow":
        import tensorflow as tf

        if TF_CACHE_FLAG not in os.environ.get("TF_XLA_FLAGS", ""):
            os.environ["TF_XLA_FLAGS"] = tf_cache_flags(home / f"tensorflow-{tf.__version__}")
        return
    if backend != "jax":
        return
    import jax

    if not jax.config.jax_compilation_cache_dir:  # type: ignore[attr-defined]  # from the env
        jax.config.update("jax_compilation_cache_dir", str(home / "jax"))
    # JAX keeps only what took a second to compile by default; a pack's step takes less
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


class PackedAutoencoder(keras.Model):
    """K autoencoders 784 → latent → 784 with stacked weights, fed positions into the epoch.

    Input: positions (batch,) into the current epoch; ``order`` (slots, n) maps them to each
    slot's training images. Output: each slot's loss and MSE on the batch.
    """

    def __init__(self, base: ExperimentConfig, slots: int, pixels: np.ndarray, topk: bool):
        super().__init__(name="packed")
        m = base.model
        # the top-k step (a sort per digit) only in packs that may hold a topk trial
        self.slots, self.base, self.topk = slots, base, topk
        latent = m.latent
        self.encoder_kernel = self.add_weight((slots, PIXELS, latent), host_zeros, name="enc_w")
        self.encoder_bias = self.add_weight((slots, latent), host_zeros, name="enc_b")
        # its constraint (SlotDecoderNorm) reads the optimizer: the trainer sets it
        self.decoder_kernel = self.add_weight((slots, latent, PIXELS), host_zeros, name="dec_w")
        self.decoder_bias = self.add_weight((slots, PIXELS), host_zeros, name="dec_b")
        self.pixels = self.add_weight(pixels.shape, host_zeros, trainable=False, name="pixels")
        self.pixels.assign(pixels)
        self.order = self.add_weight(
            (slots, len(pixels)), host_zeros, dtype="int32", trainable=False, name="order"
        )
        self.hyper = {
            k: self.add_weight((slots,), host_zeros, trainable=False, name=k) for k in HYPER
        }
        self.loss_tracker = SlotMean(slots, "slot_loss")
        self.mse_tracker = SlotMean(slots, "slot_mse")
        self.built = True

    def slot_weights(self) -> list:
        """The stacked weights, in the order the plain model's ``get_weights()`` lists them."""
        return [self.encoder_kernel, self.encoder_bias, self.decoder_kernel, self.decoder_bias]

    def encode(self, x):
        """Codes (slots, batch, latent) of images (batch, 784) shared by all slots, or
        (slots, batch, 784) of each slot's own."""
        spec = "bi,kil->kbl" if len(x.shape) == 2 else "kbi,kil->kbl"
        pre = ops.einsum(spec, x, self.encoder_kernel) + self.encoder_bias[:, None, :]
        codes = ops.relu(pre) if self.base.model.activation == "relu" else ops.sigmoid(pre)
        if not self.topk:
            return codes
        return keep_top_k(codes, self.hyper["k"][:, None, None])  # k = latent keeps them all

    def decode(self, codes):
        """Reconstructions (slots, batch, 784) of codes (slots, batch, latent)."""
        return ops.sigmoid(
            ops.einsum("kbl,klo->kbo", codes, self.decoder_kernel) + self.decoder_bias[:, None, :]
        )

    def call(self, positions, training=False):
        """Per-slot loss and per-pixel MSE (slots,) on the batch at ``positions`` (-1: a row that
        pads the epoch's last batch, left out of both). They are outputs, not recomputed in
        ``compute_metrics``, because by then the optimizer has moved the weights that the
        penalties read."""
        positions = ops.cast(positions, "int32")
        index = ops.take(self.order, ops.maximum(positions, 0), axis=1)  # (slots, batch)
        x = ops.take(self.pixels, index, axis=0)  # (slots, batch, 784)
        codes = self.encode(x)
        return self._slot_terms(x, codes, self.decode(codes), _samples(positions))

    def _slot_terms(self, x, codes, x_hat, weights):
        """Per-slot loss (slots,) as the plain model computes it, and per-pixel MSE (slots,), over
        the samples ``weights`` (batch,) marks 1."""
        h = self.hyper
        mse = losses.sample_mean(losses.squared_error(x, x_hat), weights)
        reconstruction = losses.sample_mean(
            losses.RECONSTRUCTION[self.base.train.loss](x, x_hat), weights
        )
        kernels = [self.encoder_kernel]
        if self.base.model.penalty_layers == "both":
            kernels.append(self.decoder_kernel)
        total = (
            reconstruction
            + h["l1"] * losses.l1_activity(codes, weights)
            + h["beta"]
            * losses.kl_sparsity(codes, h["p"][:, None], self.base.model.kl_reduction, weights)
            + h["weight_decay"] * sum(losses.weight_decay(w) for w in kernels)
            + h["alpha"] * sum(losses.nonnegativity(w) for w in kernels)
        )
        return total, mse

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total, _ = y_pred
        # a free slot adds nothing, and a diverged one cannot turn the sum into NaN
        return ops.sum(ops.where(self.hyper["active"] > 0, total, 0.0))

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        total, mse = y_pred
        batch = ops.sum(_samples(ops.cast(x, "int32")))  # padding rows left out
        self.loss_tracker.update_state(total, batch)
        self.mse_tracker.update_state(mse, batch)
        return self.get_metrics_result()


def _samples(positions):
    """1 for a sample of the epoch, 0 for a row that pads its last batch (position -1)."""
    return ops.cast(positions >= 0, "float32")


class PackedTrainer:
    """Trains the trials in its slots together; the caller fills and frees slots between epochs.

    ``assign(slot, cfg)`` starts a trial in a slot, ``run(on_epoch)`` trains until no slot holds a
    trial, calling ``on_epoch({slot: (epoch, measures)})`` after every epoch with each busy slot's
    own epoch count, training ``loss`` and ``mse`` and validation measures (``val_mse``, ...).
    Inside ``on_epoch`` the caller may ``export`` a slot, ``release`` it or ``assign`` it a new
    trial; a slot that has trained its ``train.epochs`` is released after the call.
    """

    def __init__(
        self, base: ExperimentConfig, data: Dataset, slots: int = 1, topk: bool | None = None
    ):
        """``topk``: whether a topk trial may join (default: whether ``base`` is one)."""
        if base.model.family == "vae":
            raise PackError("the VAE is not packed; it trains with models.build and fit")
        if slots < 1:
            raise PackError(f"a pack needs at least one slot, got {slots}")
        self.base, self.data, self.slots = base, data, slots
        topk = base.model.family == "topk" if topk is None else topk
        self.model = PackedAutoencoder(base, slots, data.x_train, topk)
        compiled = backend_compiles()
        batches = math.ceil(len(data.x_train) / base.train.batch_size)
        self.model.compile(
            optimizer=OPTIMIZERS[base.train.optimizer](slots),
            jit_compile=compiled,
            steps_per_execution=batches if compiled else 1,
        )
        self.model.optimizer.build(self.model.trainable_variables)
        if topk or base.model.decoder_norm > 0:  # topk's columns at unit norm, the others' bound
            optimizer = self.model.optimizer
            self.model.decoder_kernel.constraint = SlotDecoderNorm(
                optimizer.slot_floor, optimizer.slot_ceiling
            )
        self.configs: list[ExperimentConfig | None] = [None] * slots
        self.epochs = [0] * slots  # epochs trained by each slot's current trial
        self._order = np.zeros((slots, len(data.x_train)), np.int32)
        self._streams: dict[int, np.random.Generator] = {}  # slot -> its batch order's stream
        self._initial: dict[tuple, list[np.ndarray]] = {}  # plain models' initial weights
        self.measures = PackMeasures(self.model, data)
        self._rows = Rows()  # slots' rows set by assign and release, written before they are read

    def busy(self) -> list[int]:
        return [k for k, cfg in enumerate(self.configs) if cfg is not None]

    def free(self) -> list[int]:
        return [k for k, cfg in enumerate(self.configs) if cfg is None]

    def check(self, cfg: ExperimentConfig) -> None:
        """Raise PackError unless ``cfg`` differs from the pack's base only in SLOT_FIELDS."""
        if cfg.model.family == "vae":
            raise PackError("the VAE is not packed")
        mine, theirs = self.base.flat(), cfg.flat()
        for key, value in theirs.items():
            if key not in SLOT_FIELDS and value != mine[key]:
                raise PackError(f"{key}={value!r} differs from the pack's {mine[key]!r}")

    def assign(self, slot: int, cfg: ExperimentConfig) -> None:
        """Start ``cfg`` in ``slot`` with the weights ``models.build(cfg)`` starts from (written
        with the slot's other rows before they are next read)."""
        self.check(cfg)
        if cfg.model.family == "topk" and not self.model.topk:
            raise PackError("this pack was made without the top-k step (topk=False)")
        model, rows = self.model, self._rows
        for variable, value in zip(model.slot_weights(), self._initial_weights(cfg), strict=True):
            rows.set(variable, slot, value)
        m = cfg.model
        topk = m.family == "topk"
        for key, number in (
            ("l1", m.l1),
            ("beta", m.beta),
            ("p", m.p),
            ("weight_decay", m.weight_decay),
            ("alpha", m.alpha),
            ("k", m.k if topk else m.latent),
            ("active", 1.0),
        ):
            rows.set(model.hyper[key], slot, number)
        model.optimizer.reset_slot(slot, rows)
        rows.set(model.optimizer.slot_lr, slot, cfg.train.learning_rate)
        rows.set(model.optimizer.slot_floor, slot, DECODER_NORM if topk else 0.0)
        rows.set(model.optimizer.slot_ceiling, slot, DECODER_NORM if topk else m.decoder_norm)
        self.configs[slot], self.epochs[slot] = cfg, 0
        self._streams[slot] = np.random.default_rng(cfg.train.seed)
        self._order[slot] = self._streams[slot].permutation(len(self.data.x_train))
        model.order.assign(self._order)

    def release(self, slot: int) -> None:
        """Free ``slot``: it stops counting (no loss, frozen) until it is assigned again."""
        model, rows = self.model, self._rows
        rows.set(model.hyper["active"], slot, 0.0)
        rows.set(model.optimizer.slot_lr, slot, 0.0)
        for variable in model.slot_weights():  # a diverged slot leaves no NaN behind
            rows.set(variable, slot, 0.0)
        self.configs[slot] = None

    def export(self, slot: int) -> keras.Model:
        """The slot's trial as the plain autoencoder ``models.build`` makes, with its weights."""
        return models.trained(self._config(slot), self.weights(slot))

    def _config(self, slot: int) -> ExperimentConfig:
        cfg = self.configs[slot]
        if cfg is None:
            raise PackError(f"slot {slot} holds no trial")
        return cfg

    def weights(self, slot: int) -> list[np.ndarray]:
        """The slot's weights now, as the plain model's ``get_weights()`` lists them."""
        self._rows.write()
        return [ops.convert_to_numpy(v.value[slot]) for v in self.model.slot_weights()]

    def final_measures(self, results: EpochResults) -> dict[int, dict[str, float]]:
        """What ``runner.final_measures`` gives of each slot's exported model, for every slot
        whose trial ended its last epoch in ``results``, in one pass over the validation and test
        splits, without building a plain model."""
        slots = [
            slot for slot, (epoch, _) in results.items() if epoch == self._config(slot).train.epochs
        ]
        self._rows.write()
        return self.measures.final(slots)

    def run(self, on_epoch: Callable[[EpochResults], None]) -> None:
        """Train until every slot is free. Exceptions from ``on_epoch`` end the training."""
        if not self.busy():
            return
        self._rows.write()
        positions, batch_size = self._positions()
        self.model.fit(
            positions,
            batch_size=batch_size,
            epochs=2**31 - 1,
            shuffle=False,
            verbose=0,
            callbacks=[_EpochEnd(self, on_epoch)],
        )

    def _positions(self):
        """Positions 0..n-1 into the epoch, batched, the same every epoch, and the batch size to
        give ``fit``. The last batch, if short, is padded to the full size with -1 (rows the
        model leaves out): one shape for every step, so the step compiles once, not twice. On
        TensorFlow a cached tf.data pipeline: from an array, Keras builds a new one every epoch,
        which took a third of an epoch's time here."""
        n, size = len(self.data.x_train), self.base.train.batch_size
        positions = np.full(math.ceil(n / size) * size, -1, np.int32)
        positions[:n] = np.arange(n)
        if keras.backend.backend() != "tensorflow":
            return positions, size
        import tensorflow as tf

        batches = tf.data.Dataset.from_tensor_slices(positions).batch(size)
        return batches.cache(), None

    def _epoch_end(self, logs: dict, on_epoch: Callable[[EpochResults], None]) -> None:
        busy = self.busy()
        slot_losses = np.asarray(logs["slot_loss"], np.float64)
        mses = np.asarray(logs["slot_mse"], np.float64)
        val = self.measures.split(self.data.x_val)
        results: EpochResults = {}
        for k in busy:
            self.epochs[k] += 1
            values = {"loss": float(slot_losses[k]), "mse": float(mses[k])}
            values.update({f"val_{name}": float(v[k]) for name, v in val.items()})
            results[k] = (self.epochs[k], values)
            self._order[k] = self._streams[k].permutation(len(self.data.x_train))
        configs = list(self.configs)
        on_epoch(results)
        for k in busy:  # trained out and not reassigned by the caller
            cfg = self.configs[k]
            if cfg is not None and cfg is configs[k] and self.epochs[k] >= cfg.train.epochs:
                self.release(k)
        self._rows.write()
        self.model.order.assign(self._order)
        if not self.busy():
            self.model.stop_training = True

    def _initial_weights(self, cfg: ExperimentConfig) -> list[np.ndarray]:
        # they depend on the seed and the family alone (topk starts its decoder columns at unit
        # norm): drawn once for each
        key = (cfg.train.seed, cfg.model.family)
        if key not in self._initial:
            self._initial[key] = models.initial_weights(cfg)
        return self._initial[key]


class _EpochEnd(keras.callbacks.Callback):
    def __init__(self, trainer: PackedTrainer, on_epoch: Callable[[EpochResults], None]):
        super().__init__()
        self.trainer, self.on_epoch = trainer, on_epoch

    def on_epoch_end(self, epoch, logs=None):
        self.trainer._epoch_end(logs or {}, self.on_epoch)
