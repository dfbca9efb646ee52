"""Whether a training can fit in memory, told before anything is trained or written.

``check(cfg, sizes, slots)`` estimates the bytes a training of ``cfg`` needs at the least (the
weights, their gradients, the optimizer's two states per weight, the activations of one batch and
of one chunk of the validation measures) and raises ConfigError when that is more than the memory
available: an accelerator's own under JAX, else the host's (``MemAvailable``). A size that cannot
fit (``--set model.latent=100000000``) is refused in one line instead of failing with an
out-of-memory traceback once training has started. The estimate stays below what training
takes (peak resident memory measured 1.0-1.5x the estimate on TensorFlow, 1.2-2x on JAX), so a
refused training could not have run; one that passes may still not fit when it is close.
"""

from __future__ import annotations

import os

from experiments.config import ConfigError, ExperimentConfig
from experiments.data import PIXELS

FLOAT = 4  # bytes of a float32
STATES = 4  # per weight: itself, its gradient, two optimizer states (Adam's m and v; Adadelta's)
EVAL_CHUNK = 4096  # samples per call of models.encode/decode when a plain model is measured


def needed_bytes(cfg: ExperimentConfig, sizes: dict[str, int], slots: int = 1) -> int:
    """Bytes that training ``cfg`` on splits of ``sizes`` ({"train": n, "val": n, ...}) needs at
    the least: the VAE as one plain model, the others in a pack of ``slots``."""
    m = cfg.model
    batch = min(cfg.train.batch_size, sizes["train"])
    if m.family == "vae":  # 784 -> hidden -> (mean, log-variance) -> z -> hidden -> 784
        weights = (
            (PIXELS + 1) * m.hidden
            + 2 * (m.hidden + 1) * m.latent
            + (m.latent + 1) * m.hidden
            + (m.hidden + 1) * PIXELS
        )
        activations = batch * (2 * m.hidden + 3 * m.latent + PIXELS)
        measure = min(EVAL_CHUNK, sizes["val"]) * (m.hidden + 2 * m.latent + PIXELS)
        return FLOAT * (STATES * weights + 2 * activations + measure)
    from experiments.pack_measures import MEASURE_ELEMENTS

    plain = 2 * PIXELS * m.latent + m.latent + PIXELS  # one autoencoder's weights
    activations = slots * batch * (m.latent + PIXELS)  # codes and reconstructions
    chunk = min(max(1, MEASURE_ELEMENTS // (slots * PIXELS)), sizes["val"])
    measure = slots * chunk * (m.latent + PIXELS)
    # + the plain model that gives each slot its initial weights, and each slot's batch order
    return FLOAT * (
        STATES * slots * plain + 2 * activations + measure + plain + slots * sizes["train"]
    )


def available_bytes() -> int | None:
    """Memory a training here can have: the accelerator's free memory under JAX on a GPU, else
    the host's available memory; None where neither can be read."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.local_devices()[0]
        stats = device.memory_stats() if device.platform != "cpu" else None
        if stats and "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check(
    cfg: ExperimentConfig,
    sizes: dict[str, int],
    slots: int = 1,
    processes: int = 1,
    what: str | None = None,
) -> None:
    """Raise ConfigError, in one line (starting with ``what``), if ``processes`` trainings of
    ``cfg`` (in packs of ``slots``) need more memory than is available."""
    need = processes * needed_bytes(cfg, sizes, slots)
    have = available_bytes()
    if have is None or need <= have:
        return
    m = cfg.model
    sizes_ = f"model.latent={m.latent}" + (
        f", model.hidden={m.hidden}" if m.family == "vae" else ""
    )
    packs = (f", {slots} trials per pack" if slots > 1 else "") + (
        f" in each of {processes} workers" if processes > 1 else ""
    )
    raise ConfigError(
        f"{what + ': ' if what else ''}{sizes_} does not fit in memory: training "
        f"needs at least {_size(need)} (weights, gradients, optimizer state and "
        f"activations of batch {min(cfg.train.batch_size, sizes['train'])}"
        f"{packs}), {_size(have)} is available"
    )


def _size(n: float) -> str:
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.0f} bytes" if i == 0 else f"{n:.1f} {units[i]}"
