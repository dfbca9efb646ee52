"""Create or resume a study in its storage and run trials.

A study is found by name in its storage; running the same command again continues it (the trial
numbering goes on, finished trials stay). Trials left RUNNING by a dead worker are failed, queued
again and their MLflow runs ended (study/workers.py); completed trials whose runs lack their
record are repaired (study/repair.py), as the study is opened and as it is closed.
"""

from __future__ import annotations

import gc
import math
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from experiments.config import ExperimentConfig
from experiments.data import Dataset
from experiments.slots import default_slots
from study import confirm, interrupt
from study.loop import PackLoop
from study.objective import Objective
from study.recording import StudyTracking
from study.repair import Repaired, repair
from study.results import (
    OBJECTIVE,
    SPEC_ATTR,
    StudySpec,
    best_feasible,
    family,
    feasible,
    value,
)
from study.storage import mask, open_storage
from study.workers import Recovery, recover
from tracking.runs import git_commit


class StudyError(ValueError):
    """A study that cannot be run as asked (e.g. resumed with a different definition)."""


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    # multivariate + group model the families' conditional spaces jointly; constant_liar keeps
    # parallel workers from sampling the same point
    return optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=10
    )


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":  # Optuna's benchmarks favour it with TPE
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, epochs // 10), max_resource=epochs, reduction_factor=3
        )
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, epochs // 5))
    return optuna.pruners.NopPruner()


def open_study(spec: StudySpec, storage_url: str, worker: int = 0) -> optuna.Study:
    """Create the study, or load it and check it is the same study. Each parallel ``worker``
    samples with its own seed, so workers do not propose the same points."""
    storage = open_storage(storage_url)
    sampler = make_sampler(spec.base.train.seed + worker)
    pruner = make_pruner(spec.pruner, spec.base.train.epochs)
    try:  # loading writes nothing: a study resumed with other settings leaves the storage as is
        study = optuna.load_study(
            study_name=spec.name, storage=storage, sampler=sampler, pruner=pruner
        )
    except KeyError:
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            direction="minimize",
            load_if_exists=True,
            sampler=sampler,
            pruner=pruner,
        )
    # what makes trials comparable: families, target and every fixed config value (the pruner
    # may change between sessions; it only decides when to stop a trial)
    wanted = {
        "families": ",".join(spec.families),
        "target": spec.target,
        "measure": spec.measure,
        **spec.base.flat(),
    }
    stored = study.user_attrs.get(SPEC_ATTR)
    if stored is None:
        study.set_user_attr(SPEC_ATTR, wanted)
    else:
        # a config key added since the study was created had its default value then
        defaults = ExperimentConfig().flat()
        differ = [k for k in wanted if stored.get(k, defaults.get(k)) != wanted[k]]
        if differ:
            k = differ[0]
            raise StudyError(
                f"study {spec.name!r} exists with {k}={stored.get(k)}, not "
                f"{wanted[k]}; resume it with the same settings or pick a new "
                f"--study-name"
            )
    return study


def balance_families(study: optuna.Study, families: tuple[str, ...]) -> Callable[[], None]:
    """Before each ask: queue the least-tried family, so every family gets its share of the budget
    (TPE would otherwise settle on whichever family looked best early) while TPE still chooses
    every other value. A trial already queued (a retry) goes first."""

    def enqueue() -> None:
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return
        tried = [t.params.get("model.family") for t in study.get_trials(deepcopy=False)]
        family = min(families, key=lambda f: (tried.count(f), families.index(f)))
        study.enqueue_trial({"model.family": family})

    return enqueue


class _Progress:
    """Study callback: a progress bar with the best feasible value so far, and a line per trial."""

    def __init__(
        self, total: int | None, study: optuna.Study, tracking: StudyTracking | None, metric: str
    ):
        self.bar = tqdm(total=total, unit="trial", dynamic_ncols=True, leave=True)
        self.tracking, self.metric = tracking, metric
        self.best = best_feasible(study.get_trials(deepcopy=False))

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.bar.update(1)
        line = f"trial {trial.number:4d} {family(trial) or '?':9s} {trial.state.name:8s}"
        if trial.state == TrialState.COMPLETE:
            measure = trial.user_attrs.get(self.metric, math.nan)
            line += (
                f" {OBJECTIVE}={value(trial):.4f} {self.metric.removeprefix('val_')}="
                f"{measure:.3f}"
                f"{' feasible' if feasible(trial) else ''}"
            )
            if feasible(trial) and (self.best is None or value(trial) < value(self.best)):
                self.best = trial
        elif trial.state == TrialState.PRUNED:
            line += f" at epoch {trial.last_step}"
        self.bar.write(line)
        if self.best is not None:
            self.bar.set_postfix_str(
                f"best feasible {OBJECTIVE}={value(self.best):.4f} (trial {self.best.number})"
            )
            if self.tracking is not None:
                self.tracking.parent_log.log_metrics(
                    {f"best_feasible_{OBJECTIVE}": value(self.best)}, step=trial.number
                )

    def close(self) -> None:
        self.bar.close()


@dataclass
class Outcome:
    study: optuna.Study
    trials: list[FrozenTrial]
    reconciled: int  # runs of dead trials ended (or dead trials failed, without tracking)
    tracking: StudyTracking | None
    helpers_failed: int = 0  # helper processes that did not end well
    repaired: Repaired = field(default_factory=Repaired)  # runs given back their record
    confirmation: confirm.Outcome | None = None  # None when it was skipped (or a helper)

    def counts(self) -> dict[str, int]:
        out = {
            s: sum(t.state.name == s for t in self.trials)
            for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")
        }
        out["feasible"] = sum(t.state == TrialState.COMPLETE and feasible(t) for t in self.trials)
        return out


def run_study(
    spec: StudySpec,
    data: Dataset,
    storage_url: str,
    n_trials: int,
    timeout: float | None = None,
    tracking_uri: str | None = None,
    tracking: bool = True,
    progress: bool = True,
    worker: int = 0,
    helpers: Callable[[], list[subprocess.Popen]] | None = None,
    pack: int | None = None,
    confirm_top: int = 0,
    confirm_seeds: int = 0,
) -> Outcome:
    """Open (or resume) the study and run ``n_trials`` more trials (or until ``timeout``),
    ``pack`` of them training at a time as one model (default: ``default_slots()``); then
    confirm the ``confirm_top`` best feasible trials of each family on ``confirm_seeds`` fresh
    seeds and train the baselines (study/confirm.py; 0 skips it).

    ``worker`` > 0 marks a helper process of a parallel study: it leaves the study's parent run
    to the coordinator, which starts its helpers with ``helpers()`` once the study exists and
    closes the parent run after they have all ended.
    """
    study = open_study(spec, storage_url, worker)
    tags = spec.describe() | {"storage": mask(storage_url), "git_commit": git_commit()}
    track = StudyTracking.open(study, tags, tracking_uri) if tracking else None
    reconciled = recover(study, track)
    # the coordinator repairs, before its helpers start and after they end: one at a time
    repaired = repair(study, track, data, pack) if worker == 0 else Repaired()
    procs = helpers() if helpers else []
    bar = _Progress(n_trials, study, track, spec.constraint.metric) if progress else None
    loop = PackLoop(
        study,
        Objective(spec, data, track),
        data,
        pack or default_slots(),
        n_trials,
        timeout,
        callbacks=[c for c in (bar, Recovery(study, track)) if c],
        before_ask=balance_families(study, spec.families) if len(spec.families) > 1 else None,
    )
    status, confirmed = "FAILED", None
    # what lives through the study (the libraries, the pack, the data: millions of objects) is
    # left out of the garbage collector's full passes, which otherwise took a tenth of a short
    # study's time; given back to it at the end
    gc.freeze()
    try:
        loop.run()
        for proc in procs:
            proc.wait()
        interrupt.check()  # before the confirmation, a Ctrl-C that something swallowed
        status = "FINISHED" if all(p.returncode == 0 for p in procs) else "FAILED"
        if worker == 0:  # a helper killed in its last trial leaves it to us
            reconciled += recover(study, track)
            repaired += repair(study, track, data, pack)
        if worker == 0 and confirm_top > 0 and confirm_seeds > 0:
            recorder = (
                confirm.Recorder(track.tracker, track.parent, spec.name, data, guard=track.guarded)
                if track
                else None
            )
            confirmed = confirm.confirm(
                study,
                spec.base,
                data,
                list(spec.families),
                spec.constraint,
                confirm_top,
                confirm_seeds,
                pack or default_slots(),
                recorder,
                say=bar.bar.write if bar else print,
            )
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        if bar:
            bar.close()
        if track:
            track.close(status, end_parent=worker == 0)
        gc.unfreeze()
    return Outcome(
        study,
        study.get_trials(),
        reconciled,
        track,
        sum(p.returncode != 0 for p in procs),
        repaired,
        confirmed,
    )
