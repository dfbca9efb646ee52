"""One measurement of ``make bench`` (study/bench.py), run in a process of its own: a variant
(``matmul``, ``single-plain[:measured]``, ``single-packed``, ``study-plain``,
``study:<pack>,<tracked|off>``) trained on the bench's trial configurations, and what the
model's arithmetic costs (``train_flops``) against the machine's (``matmul_rate``).
"""

from __future__ import annotations

import math
import resource
import tempfile
import time

import numpy as np

from experiments.config import ConfigError, ExperimentConfig, from_flat
from experiments.presets import DEFAULT
from study import space

SINGLE_EPOCHS = 60  # one trial, timed epoch by epoch
PIXELS = 784  # the autoencoders' input and output width
MATMUL_SIDE, MATMUL_REPEATS = 2048, 10  # the machine's float32 rate: best of 10 products


def train_flops(cfg: ExperimentConfig) -> int:
    """Floating-point operations of one training step per sample, counting the matrix products:
    a dense layer n_in → n_out costs 2·n_in·n_out forward, as much for its weights' gradient and
    as much again for its input's gradient (not needed by the first layer). 784-32-784: 10·784·32
    = 0.25 MFLOP. Biases, activations, penalties and the optimizer's update (once per batch, not
    per sample) add a few percent and are left out."""
    layers = [(PIXELS, cfg.model.latent), (cfg.model.latent, PIXELS)]
    return sum(2 * n_in * n_out * (2 if i == 0 else 3) for i, (n_in, n_out) in enumerate(layers))


def matmul_rate() -> float:
    """Float32 operations per second of a large matrix product (numpy's BLAS, all cores): what
    the arithmetic of this machine allows, measured now."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((MATMUL_SIDE, MATMUL_SIDE), dtype=np.float32) for _ in range(2))
    a @ b  # threads started, caches warm
    best = math.inf
    for _ in range(MATMUL_REPEATS):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_SIDE**3 / best


def _per_epoch(ends: list[float], n: int) -> dict:
    """Samples per second from epoch end times (the first epoch, which compiles, apart): the
    median epoch, robust to the odd slow one on a shared machine."""
    epochs = np.diff(ends[1:])
    return {"samples_per_s": n / float(np.median(epochs)), "first_epoch_s": ends[1] - ends[0]}


def _single_plain(configs, data, measured: bool) -> dict:
    import keras

    from experiments import models
    from experiments.train import fit_plain

    cfg = from_flat(configs[0]).replace(**{"train.epochs": SINGLE_EPOCHS})
    ends = [time.perf_counter()]
    if measured:  # with the validation measures this project takes after every epoch
        fit_plain(cfg, data, [lambda *_: ends.append(time.perf_counter())])
    else:
        at_end = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda *_: ends.append(time.perf_counter())
        )
        models.build(cfg).fit(
            data.x_train,
            data.x_train,
            epochs=cfg.train.epochs,
            batch_size=cfg.train.batch_size,
            verbose=0,
            callbacks=[at_end],
        )
    return _per_epoch(ends, len(data.x_train))


def _single_packed(configs, data) -> dict:
    from experiments.packed import PackedTrainer

    cfg = from_flat(configs[0]).replace(**{"train.epochs": SINGLE_EPOCHS})
    trainer = PackedTrainer(cfg, data, 1)
    trainer.assign(0, cfg)
    ends = [time.perf_counter()]
    trainer.run(lambda results: ends.append(time.perf_counter()))
    return _per_epoch(ends, len(data.x_train))


def _study_plain(configs, data) -> dict:
    from experiments.runner import final_measures
    from experiments.train import History, fit_plain

    for flat in configs:
        cfg = from_flat(flat)
        final_measures(fit_plain(cfg, data, [History()]), data)
    return {}


def _store(folder: str) -> str:
    return f"sqlite:///{folder}/mlflow.db"


def _study(configs, data, pack: int, tracking: bool, folder: str) -> dict:
    from study.results import StudySpec
    from study.search import open_study, run_study

    first = from_flat(configs[0])
    base = DEFAULT.replace(
        **{"name": "study", "data.name": first.data.name, "train.epochs": first.train.epochs}
    )
    spec = StudySpec("bench", space.DEFAULT_FAMILIES, 0.05, base, "none")
    storage = f"journal:{folder}/journal.log"
    study = open_study(spec, storage)
    for flat in configs:
        study.enqueue_trial(
            {k: flat[k] for k in ("model.family", *space.FAMILY_PARAMS[flat["model.family"]])}
        )
    out = run_study(
        spec,
        data,
        storage,
        len(configs),
        tracking=tracking,
        progress=False,
        pack=pack,
        tracking_uri=_store(folder),
    )
    counts = out.counts()
    if counts["COMPLETE"] != len(configs):
        raise RuntimeError(f"the bench study ended with {counts}")
    spans = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in out.trials
        if t.datetime_complete and t.datetime_start
    ]
    return {"trial_seconds": sum(spans) / len(spans)}  # asked to told, in the pack


def measure(variant: str, configs: list[dict], data_name: str) -> dict:
    """Run one variant here and return its numbers (wall time includes everything after the
    data is loaded)."""
    from mlflow import MlflowClient

    from experiments import data as data_module
    from experiments.packed import use_compile_cache

    use_compile_cache()  # where the bench says (JAX_COMPILATION_CACHE_DIR), before compiling
    data = data_module.load(data_name)
    # the libraries are loaded before the clock starts: a process's start, not the work measured
    import experiments.runner  # noqa: F401
    import study.search  # noqa: F401

    kind, _, arg = variant.partition(":")
    with tempfile.TemporaryDirectory() as folder:
        if variant.endswith(",tracked"):
            # a store in use already, as a user's is: MLflow makes its tables once per store
            # (1.4 s here), not once per study
            MlflowClient(_store(folder)).search_experiments()
        start, cpu = time.perf_counter(), _cpu()
        if kind == "matmul":
            out = {"flops_per_s": matmul_rate()}
        elif kind == "single-plain":
            out = _single_plain(configs, data, measured=arg == "measured")
        elif kind == "single-packed":
            out = _single_packed(configs, data)
        elif kind == "study-plain":
            out = _study_plain(configs, data)
        elif kind == "study":
            pack, tracked = arg.split(",")
            out = _study(configs, data, int(pack), tracked == "tracked", folder)
        else:
            raise ConfigError(f"unknown bench variant {variant!r}")
        out["seconds"] = time.perf_counter() - start
        # CPU seconds of this process, and of its ended children (tracking's writer process)
        out["cpu_s"], out["children_cpu_s"] = (b - a for a, b in zip(cpu, _cpu(), strict=True))
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _cpu() -> tuple[float, float]:
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime
