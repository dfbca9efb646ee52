"""One experiment end to end: build, fit, evaluate, draw, record.

The steps are separate functions so a study can reuse them around its own training call.
Recording goes to any object with ``log_metrics``, ``log_figure``, ``log_figures``,
``log_images``, ``log_dict``, ``log_text`` and ``log_file`` (``tracking.runs.Run`` is one); this
module never imports MLflow.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import keras
import numpy as np
from matplotlib.figure import Figure

from experiments import figures, metrics, models, occupancy
from experiments.config import ExperimentConfig
from experiments.data import Dataset
from experiments.packed import PackedTrainer, PackError
from experiments.slots import default_slots
from experiments.train import (
    History,
    TrainingDiverged,
    check_finite,
    evaluate_split,
    fit,
    history_csv,
)


class Recorder(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None: ...
    def log_figure(self, figure: Figure, path: str) -> None: ...
    def log_figures(
        self, sketches: Mapping[str, Callable[[], Figure]], folder: str = "figures"
    ) -> None: ...
    def log_images(
        self, pictures: Mapping[str, Callable[[], np.ndarray]], folder: str = "figures"
    ) -> None: ...
    def log_dict(self, data: dict, path: str) -> None: ...
    def log_text(self, text: str, path: str) -> None: ...
    def log_file(self, local_path: str | Path, artifact_dir: str | None = None) -> None: ...


@dataclass
class Result:
    model: keras.Model | None  # None: a study's trial, measured in its pack, not tracked
    history: dict[str, list[float]]
    final: dict[str, float]  # last epoch's val_* and the test_* measures
    seconds: float  # training time


def describe(cfg: ExperimentConfig, data: Dataset) -> dict[str, str]:
    """Tags every run carries: dataset identity and split sizes, family, Keras backend."""
    return {
        "family": cfg.model.family,
        "backend": keras.backend.backend(),
        **{f"data.{k}": str(v) for k, v in data.describe().items()},
    }


def _corners(data: Dataset) -> list[int]:
    """Four test digits of different classes: the interpolation's corners (fewer if missing)."""
    return [
        int(np.flatnonzero(data.y_test == d)[0]) for d in (0, 1, 7, 8) if np.any(data.y_test == d)
    ]


def applicable_figures(cfg: ExperimentConfig, data: Dataset) -> tuple[str, ...]:
    """The names of the notebooks' presentations that apply to ``cfg``, as ``sketch``
    keys them."""
    vae, latent = cfg.model.family == "vae", cfg.model.latent
    names = ["reconstruction", "receptive_fields", "digit_counts"]
    if latent >= 2:
        names.append("latent_scatter")
    if vae and latent == 2:
        names.append("latent_sweep")
    elif len(_corners(data)) == 4:
        names.append("interpolation")
    if latent > 2:
        names.append("tsne")
    if not vae:
        names.append("activations")
    return tuple(names)


def sketch(
    model: keras.Model, data: Dataset, cfg: ExperimentConfig, names: tuple[str, ...] | None = None
) -> dict[str, partial]:
    """The notebooks' presentations that apply to ``cfg`` (all, or those in ``names``),
    keyed by a file-friendly name, each a call of a ``figures`` function with its data bound.
    The model's part (codes, reconstructions, weights) is computed here; drawing is left to the
    caller. All but the sweeps over the decoder bind plain arrays, so they can be drawn in
    another process."""
    codes = models.encode(model, data.x_test)  # (n_test, latent)
    decode = lambda z: models.decode(model, z)  # noqa: E731
    vae = cfg.model.family == "vae"
    shown = min(10, len(codes))  # the reconstruction grid's digits
    makers = {
        "reconstruction": lambda: partial(
            figures.reconstruction_grid, data.x_test[:shown], decode(codes[:shown]), n=shown
        ),
        "receptive_fields": lambda: partial(figures.receptive_fields, models.encoder_kernel(model)),
        "digit_counts": lambda: partial(
            figures.digit_counts, data.y_train, title="training-set digit counts"
        ),
        "latent_scatter": lambda: partial(
            figures.latent_scatter, codes, data.y_test, axis_label="z[{}]" if vae else "unit {}"
        ),
        "latent_sweep": lambda: partial(figures.latent_sweep, decode),
        "interpolation": lambda: partial(figures.code_interpolation, decode, codes[_corners(data)]),
        "tsne": lambda: partial(figures.tsne, codes, data.y_test, seed=cfg.train.seed),
        "activations": lambda: partial(figures.activation_histogram, codes),
    }
    return {
        name: makers[name]()
        for name in applicable_figures(cfg, data)
        if names is None or name in names
    }


def pictures(
    model: keras.Model, data: Dataset, cfg: ExperimentConfig, names: tuple[str, ...]
) -> dict[str, partial]:
    """The figures of ``sketch`` named in ``names`` as bare pictures (``figures.*_picture``:
    uint8 arrays, no text, milliseconds to make): what a study records for each finished trial.
    Like ``sketch``, each is a call with its plain arrays bound, made where it is logged. Only
    reconstruction, receptive_fields, activations and latent_scatter have one."""
    codes = models.encode(model, data.x_test)  # (n_test, latent)
    shown = min(10, len(codes))
    makers = {
        "reconstruction": lambda: partial(
            figures.reconstruction_picture,
            data.x_test[:shown],
            models.decode(model, codes[:shown]),
            n=shown,
        ),
        "receptive_fields": lambda: partial(
            figures.receptive_field_picture, models.encoder_kernel(model)
        ),
        "activations": lambda: partial(figures.activation_picture, codes, data.y_test),
        "latent_scatter": lambda: partial(figures.latent_picture, codes, data.y_test),
    }
    if not set(names) <= set(makers):
        raise ValueError(f"no picture of {sorted(set(names) - set(makers))}")
    return {name: makers[name]() for name in applicable_figures(cfg, data) if name in names}


def draw(
    model: keras.Model, data: Dataset, cfg: ExperimentConfig, names: tuple[str, ...] | None = None
) -> dict[str, Figure]:
    """The figures of ``sketch``, drawn."""
    return {name: make() for name, make in sketch(model, data, cfg, names).items()}


def latent_occupancy(model: keras.Model, data: Dataset, cfg: ExperimentConfig):
    """The share of the VAE's 2-D latent square each digit's decodings take (seed question)."""
    classify = occupancy.train_digit_classifier(data.x_train, data.y_train, seed=cfg.train.seed)
    return occupancy.latent_occupancy(lambda z: models.decode(model, z), classify)


FIGURE_DIR = "figures"  # artefact folder of a run's figures, one PNG each
CONFIG_FILE, HISTORY_FILE = "config.json", "history.csv"
MODEL_DIR, MODEL_FILE = "model", "model.keras"


def _occupancy(cfg: ExperimentConfig, figure_names: tuple[str, ...] | None) -> bool:
    # the VAE's latent occupancy trains a classifier: only in a full record, not a study's
    return cfg.model.family == "vae" and cfg.model.latent == 2 and figure_names is None


def artifact_paths(
    cfg: ExperimentConfig, data: Dataset, figure_names: tuple[str, ...] | None = None
) -> tuple[str, ...]:
    """The artefact files ``record_artifacts`` writes for ``cfg`` with ``figure_names``."""
    names = [n for n in applicable_figures(cfg, data) if figure_names is None or n in figure_names]
    paths = [f"{FIGURE_DIR}/{n}.png" for n in names]
    if _occupancy(cfg, figure_names):
        paths += [f"{FIGURE_DIR}/occupancy.png", "occupancy.json"]
    return (*paths, CONFIG_FILE, HISTORY_FILE, f"{MODEL_DIR}/{MODEL_FILE}")


def record_artifacts(
    recorder: Recorder,
    result: Result,
    data: Dataset,
    cfg: ExperimentConfig,
    figure_names: tuple[str, ...] | None = None,
    drawn: bool = True,
) -> None:
    """Figures (all that apply, or those named), model, config and history of a finished run
    (the files of ``artifact_paths``). The figures are drawn as charts, or, if not ``drawn``,
    logged as their bare pictures (``pictures``: a study's trials)."""
    if result.model is None:
        raise ValueError("a result without its model has no artefacts to record")
    if drawn:
        recorder.log_figures(sketch(result.model, data, cfg, figure_names), FIGURE_DIR)
    else:
        recorder.log_images(pictures(result.model, data, cfg, figure_names or ()), FIGURE_DIR)
    if _occupancy(cfg, figure_names):
        occ = latent_occupancy(result.model, data, cfg)
        recorder.log_figure(figures.occupancy_map(occ, data.y_train), f"{FIGURE_DIR}/occupancy.png")
        recorder.log_dict({"rows": occ.table(data.y_train)}, "occupancy.json")
    recorder.log_dict(cfg.flat(), CONFIG_FILE)
    recorder.log_text(history_csv(result.history), HISTORY_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, MODEL_FILE)
        models.save(result.model, path)
        recorder.log_file(path, MODEL_DIR)


def final_measures(model: keras.Model, data: Dataset) -> dict[str, float]:
    """Every measure of a trained model on the validation and test splits (``val_*``,
    ``test_*``), and the L2 norms of its decoder columns (median and max over the code units:
    how far the decoder grew)."""
    out = {**evaluate_split(model, data.x_val, "val"), **evaluate_split(model, data.x_test, "test")}
    kernel = models.decoder_kernel(model)
    if kernel is not None:
        out |= metrics.decoder_norms(kernel)
    return out


def train_and_evaluate(
    cfg: ExperimentConfig, data: Dataset, recorder: Recorder | None = None, on_epoch=()
) -> Result:
    """Build and fit ``cfg``; per-epoch metrics go to ``recorder`` and ``on_epoch`` hooks."""
    hooks = list(on_epoch)
    if recorder is not None:
        hooks.insert(0, lambda epoch, values: recorder.log_metrics(values, step=epoch))
    start = time.perf_counter()
    model, history = fit(cfg, data, on_epoch=hooks)
    result = evaluate(model, history, data, time.perf_counter() - start)
    if recorder is not None:
        record_final(recorder, result, cfg)
    return result


def train_all(
    cfgs: list[ExperimentConfig], data: Dataset, slots: int | None = None
) -> list[Result | None]:
    """Each of ``cfgs`` trained and evaluated as ``train_and_evaluate`` does it (its seed, the
    same trainer), in order; None for one whose training diverged. Configs that differ only
    where a pack lets them (those of one study) train ``slots`` at a time as one pack
    (default: ``default_slots()``); a VAE, or a config the pack refuses, trains alone."""
    results: list[Result | None] = [None] * len(cfgs)
    queue = [i for i, cfg in enumerate(cfgs) if cfg.model.family != "vae"]
    alone = [i for i in range(len(cfgs)) if i not in queue]
    if queue:
        trainer = PackedTrainer(
            cfgs[queue[0]],
            data,
            min(slots or default_slots(), len(queue)),
            topk=any(c.model.family == "topk" for c in cfgs),
        )
        for i in list(queue):
            try:
                trainer.check(cfgs[i])
            except PackError:
                queue.remove(i)
                alone.append(i)
        live: dict[int, tuple[int, History, float]] = {}  # slot -> (index, history, start)

        def fill(slot: int) -> None:
            if queue:
                i = queue.pop(0)
                # a copy: the trainer tells a slot given a new trial by the config's identity
                trainer.assign(slot, copy.copy(cfgs[i]))
                live[slot] = (i, History(), time.perf_counter())

        def done(slot: int) -> None:
            del live[slot]
            trainer.release(slot)
            fill(slot)

        def each(epochs) -> None:
            finals = trainer.final_measures(epochs)
            for slot, (epoch, values) in epochs.items():
                i, history, start = live[slot]
                history(epoch, values)
                try:
                    check_finite(epoch, values)
                except TrainingDiverged:
                    done(slot)  # no result; the slot goes to the next config
                    continue
                if slot in finals:
                    results[i] = measured(
                        trainer.export(slot), history, finals[slot], time.perf_counter() - start
                    )
                    done(slot)

        for slot in trainer.free():
            fill(slot)
        trainer.run(each)
    for i in sorted(alone):
        try:
            results[i] = train_and_evaluate(cfgs[i], data)
        except TrainingDiverged:
            pass
    return results


def evaluate(
    model: keras.Model, history: dict[str, list[float]], data: Dataset, seconds: float
) -> Result:
    """The result of a trained model, with its final measures."""
    return measured(model, history, final_measures(model, data), seconds)


def measured(
    model: keras.Model | None,
    history: dict[str, list[float]],
    final: dict[str, float],
    seconds: float,
) -> Result:
    """The result of a trained model whose ``final_measures`` were taken already (in its pack:
    ``PackedTrainer.final_measures``)."""
    return Result(model, history, {**final, "train_seconds": seconds}, seconds)


def record_final(recorder: Recorder, result: Result, cfg: ExperimentConfig) -> None:
    """The final measures, after the last epoch's: the last epoch already logged its val_*
    measures, all but the cross-entropy."""
    recorder.log_metrics(
        {k: v for k, v in result.final.items() if k not in result.history}, step=cfg.train.epochs
    )


def run(cfg: ExperimentConfig, data: Dataset, recorder: Recorder | None = None) -> Result:
    """Train, evaluate and record one experiment."""
    result = train_and_evaluate(cfg, data, recorder)
    if recorder is not None:
        record_artifacts(recorder, result, data, cfg)
    return result
