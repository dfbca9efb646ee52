"""The per-slot parts of a pack's training (``experiments/packed.py`` stacks the slots' weights):
how many slots a pack has by default, each slot's epoch means, and what lives in the optimizer:
each slot's learning rate, step count and decoder-column norms.

Keras's optimizers and constraints see one learning rate and one bound for a whole variable; a
pack's variables stack K trials along their first axis, each with its own. Everything uses
``keras.ops`` and runs on any Keras 3 backend.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops


def host_zeros(shape, dtype=None) -> np.ndarray:
    """An initializer: zeros made by numpy. ``"zeros"`` makes them with ``keras.ops.zeros``,
    which JAX compiles for each new shape (30-40 ms each, a tenth of a short study's set-up)."""
    return np.zeros(shape, dtype or "float32")


def default_slots() -> int:
    """Slots per pack when nobody says: on a CPU, enough to amortise the per-step overhead
    (8 measured best on 2 cores, see make bench); on an accelerator, enough to fill it."""
    if keras.backend.backend() == "jax":
        import jax

        if jax.default_backend() != "cpu":
            return 256
    return 8


class SlotMean(keras.metrics.Metric):
    """Batch-size-weighted mean of a per-slot value (slots,) over an epoch, like Keras's loss."""

    def __init__(self, slots: int, name: str):
        super().__init__(name=name)
        self.total = self.add_variable(shape=(slots,), initializer=host_zeros, name="total")
        self.count = self.add_variable(shape=(), initializer=host_zeros, name="count")

    def update_state(self, values, weight):
        self.total.assign_add(values * weight)
        self.count.assign_add(weight)

    def result(self):
        return self.total / ops.maximum(self.count, 1.0)

    def reset_state(self):
        self.total.assign(host_zeros(self.total.shape))
        self.count.assign(0.0)


class _SlotSteps:
    """Per-slot learning rate and step count for a Keras optimizer over stacked weights.

    ``slot_lr`` (slots,) replaces the scalar learning rate (0 freezes a slot) and ``slot_start``
    holds the optimizer iteration at which each slot's trial began, so each slot counts its own
    steps. ``reset_slot`` zeroes a slot's optimizer state for a new trial.

    ``slot_floor`` and ``slot_ceiling`` (slots,) are the smallest and largest norm of a slot's
    decoder columns (``SlotDecoderNorm``): topk's are both 1, the other families' 0 and
    ``model.decoder_norm`` (a ceiling of 0: no bound). They live here, not in the model, because
    constraints run inside the optimizer's step, which on JAX sees only its own variables and the
    trained ones: a model variable read there is the value it had when the step was first traced,
    for good.
    """

    # what the Keras optimizer it is mixed into holds
    iterations: Any
    variables: list

    def _init_slots(self, slots: int):
        self.slots = slots

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.slot_lr = self.add_variable((self.slots,), initializer=host_zeros, name="slot_lr")
        self.slot_start = self.add_variable(
            (self.slots,), initializer=host_zeros, name="slot_start"
        )
        self.slot_floor = self.add_variable(
            (self.slots,), initializer=host_zeros, name="slot_floor"
        )
        self.slot_ceiling = self.add_variable(
            (self.slots,), initializer=host_zeros, name="slot_ceiling"
        )

    def add_variable_from_reference(self, reference_variable, name=None, initializer="zeros"):
        # the moments of Keras's optimizers: zeros made on the host, as the slots' own
        if initializer == "zeros":
            initializer = host_zeros
        return super().add_variable_from_reference(reference_variable, name, initializer)

    def _per_slot(self, vector, variable):
        return ops.reshape(
            ops.cast(vector, variable.dtype), (self.slots,) + (1,) * (len(variable.shape) - 1)
        )

    def _local_step(self, variable):
        return self._per_slot(ops.cast(self.iterations + 1, "float32") - self.slot_start, variable)

    def reset_slot(self, slot: int, rows: Rows) -> None:
        """Zero the slot's optimizer state and start its step count now, written with ``rows``."""
        own = {
            id(v)
            for v in (
                self.slot_lr,
                self.slot_start,
                self.slot_floor,
                self.slot_ceiling,
                self.iterations,
            )
        }
        for v in self.variables:
            if id(v) not in own and len(v.shape) and v.shape[0] == self.slots:
                rows.set(v, slot, 0.0)
        rows.set(self.slot_start, slot, float(ops.convert_to_numpy(self.iterations)))


class SlotAdam(_SlotSteps, keras.optimizers.Adam):
    """Keras's Adam update, element for element, with a learning rate and step count per slot."""

    def __init__(self, slots: int, **kwargs):
        super().__init__(**kwargs)
        self._init_slots(slots)

    def update_step(self, gradient, variable, learning_rate):
        lr = self._per_slot(self.slot_lr, variable)
        gradient = ops.cast(gradient, variable.dtype)
        local_step = self._local_step(variable)
        beta_1_power = ops.power(ops.cast(self.beta_1, variable.dtype), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, variable.dtype), local_step)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        self.assign_sub(
            variable, ops.divide(ops.multiply(m, alpha), ops.add(ops.sqrt(v), self.epsilon))
        )


class SlotAdadelta(_SlotSteps, keras.optimizers.Adadelta):
    """Adadelta has no step count: only the learning rate is per slot."""

    def __init__(self, slots: int, **kwargs):
        super().__init__(**kwargs)
        self._init_slots(slots)

    def update_step(self, grad, variable, learning_rate):
        super().update_step(grad, variable, self._per_slot(self.slot_lr, variable))


OPTIMIZERS = {"adam": SlotAdam, "adadelta": SlotAdadelta}


class SlotDecoderNorm(keras.constraints.Constraint):
    """The plain models' decoder constraints (``models.decoder_constraint``) on stacked decoder
    kernels (slots, latent, 784), element for element, each slot its own: on each code unit's
    weights (the last axis), Keras's ``MaxNorm(ceiling)`` where the slot's floor is 0,
    ``MinMaxNorm(floor, ceiling)`` (topk: exactly 1) where it is not, and nothing where the
    ceiling is 0. ``floor`` and ``ceiling`` are the optimizer's ``slot_floor``, ``slot_ceiling``."""

    def __init__(self, floor, ceiling):
        self.floor, self.ceiling = floor, ceiling

    def __call__(self, w):
        w = ops.convert_to_tensor(w)
        norms = ops.sqrt(ops.sum(ops.square(w), axis=-1, keepdims=True))  # (slots, latent, 1)
        floor = ops.reshape(ops.cast(self.floor, norms.dtype), (-1, 1, 1))
        ceiling = ops.reshape(ops.cast(self.ceiling, norms.dtype), (-1, 1, 1))
        desired = ops.minimum(ops.maximum(norms, floor), ceiling)
        bounded = ops.cast(w, norms.dtype) * (desired / (keras.config.epsilon() + norms))
        return ops.where(ceiling > 0, bounded, w)


class Rows:
    """Writes ``variable[slot] = value`` gathered while a pack's slots are filled and freed, and
    done at once by ``write``: each variable read and written whole once, however many of its
    rows changed. One eager slice update per row cost an operation each (and on JAX a compilation
    per shape): filling a pack of 8 wrote 230 rows."""

    def __init__(self) -> None:
        self._rows: dict[int, tuple[Any, dict[int, Any]]] = {}  # id -> (variable, slot -> value)

    def set(self, variable, slot: int, value) -> None:
        """``variable[slot] = value`` at the next ``write`` (a later value for the same row
        wins); ``value`` broadcasts to the row."""
        self._rows.setdefault(id(variable), (variable, {}))[1][slot] = value

    def write(self) -> None:
        """Do the writes gathered so far."""
        rows, self._rows = self._rows, {}
        for variable, values in rows.values():
            whole = np.array(ops.convert_to_numpy(variable))  # a copy, writable
            for slot, value in values.items():
                whole[slot] = value
            variable.assign(whole)
