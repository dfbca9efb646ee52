"""The objective: one trial = suggest, train, evaluate, track, finish.

Minimise the validation reconstruction MSE subject to a validation sparsity measure being at most
the target (study/results.py), recorded with ``trial.set_constraint`` (feasible when
``value - target <= 0``).
The steps around training (``begin``, ``epoch_hooks``, ``complete``, ``abort``) are separate
methods: study/loop.py trains several trials at once and drives them through Optuna's ask/tell
interface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import optuna

from experiments import models
from experiments.config import ExperimentConfig, from_flat
from experiments.data import Dataset
from experiments.runner import (
    Result,
    applicable_figures,
    artifact_paths,
    describe,
    record_artifacts,
    record_final,
)
from experiments.train import EpochHook, History
from study import space
from study.recording import StudyTracking, end_tags
from study.results import OBJECTIVE, Constraint, StudySpec
from study.workers import retry_tags
from tracking.runs import RECORDED

TRIAL_FIGURES = ("reconstruction", "receptive_fields", "activations", "latent_scatter")
CONSTRAINT_METRIC = "constraint"  # run metric: the constraint value (violation) at the end
MEASURES_ATTR = "measures"  # user attr of a COMPLETE trial: its final measures' names


def trial_figures(cfg: ExperimentConfig, data: Dataset) -> tuple[str, ...]:
    """The figures a COMPLETE trial's run holds: those of TRIAL_FIGURES that apply to ``cfg``."""
    return tuple(n for n in applicable_figures(cfg, data) if n in TRIAL_FIGURES)


@dataclass(frozen=True)
class TrialRecord:
    """What the run of a COMPLETE trial holds once recorded: the objective writes it, the repair
    of an unrecorded run (study/repair.py) restores it, the fault drill checks it."""

    metrics: dict[str, float]  # final measures and the constraint, as Optuna stored them
    histories: tuple[str, ...]  # metrics logged after every epoch, steps 1..epochs
    epochs: int
    tags: dict[str, str]
    artifacts: tuple[str, ...]  # artefact file paths
    figures: tuple[str, ...]


def trial_record(trial: optuna.trial.FrozenTrial, data: Dataset) -> TrialRecord:
    """The record of a COMPLETE trial, from what Optuna stored (a trial completed by an earlier
    version, without its measures' names, has only the constraint among its metrics)."""
    cfg = from_flat(trial.user_attrs["config"])
    [(measure, violation)] = trial.constraints.items()  # Optuna's key: the measure's name
    measures = {k: trial.user_attrs[k] for k in trial.user_attrs.get(MEASURES_ATTR, ())}
    figures = trial_figures(cfg, data)
    return TrialRecord(
        metrics={**measures, CONSTRAINT_METRIC: violation},
        histories=(OBJECTIVE, Constraint(measure, 0.0).metric),
        epochs=cfg.train.epochs,
        tags={**end_tags("COMPLETE", feasible=violation <= 0), RECORDED: "true"},
        artifacts=artifact_paths(cfg, data, figures),
        figures=figures,
    )


class MissingMetric(RuntimeError):
    """The monitored metric is absent from an epoch's values: pruning would silently stop."""


class Objective:
    """The steps of one trial around its training (study/loop.py trains several at once):
    ``begin`` suggests and opens the run, ``epoch_hooks`` record and prune every epoch,
    ``complete`` or ``abort`` end it. Tracking is optional (``None`` runs without MLflow)."""

    def __init__(self, spec: StudySpec, data: Dataset, tracking: StudyTracking | None = None):
        self.spec, self.data, self.tracking = spec, data, tracking

    def begin(self, trial: optuna.Trial):
        """Suggest the config and open the trial's run; returns ``(cfg, run or None)``."""
        cfg = space.suggest(trial, self.spec.base, self.spec.families)
        trial.set_user_attr("config", cfg.flat())
        run = (
            self.tracking.start_trial(
                trial.number, cfg, describe(cfg, self.data) | retry_tags(trial)
            )
            if self.tracking
            else None
        )
        if run is not None:
            trial.set_user_attr("mlflow_run_id", run.run_id)
        return cfg, run

    def epoch_hooks(self, trial: optuna.Trial, run, history: History) -> list[EpochHook]:
        """What happens after each epoch, in order: the history, the run's metrics, pruning
        (which raises optuna.TrialPruned)."""
        hooks: list[EpochHook] = [history]
        if run is not None:
            hooks.append(lambda epoch, values: run.log_metrics(values, step=epoch))
        return [*hooks, self._pruning(trial)]

    def _pruning(self, trial: optuna.Trial) -> EpochHook:
        def report(epoch: int, values: dict[str, float]) -> None:
            metric = self.spec.constraint.metric
            if OBJECTIVE not in values or metric not in values:
                raise MissingMetric(
                    f"the study monitors {OBJECTIVE!r} and {metric!r}, "
                    f"but epoch {epoch} reported only {sorted(values)}"
                )
            if not math.isfinite(values[OBJECTIVE]):
                return  # training raises TrainingDiverged right after the hooks
            trial.report(self.pruning_value(values), epoch)
            if trial.should_prune():
                # a pruned trial still tells the sampler how sparse it was
                self._constrain(trial, values)
                raise optuna.TrialPruned(
                    f"pruned after epoch {epoch}: {OBJECTIVE}={values[OBJECTIVE]:.4g}"
                )

        return report

    def pruning_value(self, values: dict[str, float]) -> float:
        """What the pruner compares across trials at an epoch: the validation MSE plus how far
        the sparsity measure is above the target. On the MSE alone, dense (infeasible) trials
        reconstruct best and get feasible ones pruned."""
        return values[OBJECTIVE] + max(0.0, self.spec.constraint.violation(values))

    def _constrain(self, trial: optuna.Trial, values: dict[str, float]) -> float:
        violation = self.spec.constraint.violation(values)
        trial.set_constraint(self.spec.measure, violation)
        return violation

    def complete(
        self,
        trial: optuna.Trial,
        cfg: ExperimentConfig,
        run,
        result: Result,
        weights: list[np.ndarray] | None,
    ) -> float:
        """Store the measures, set the constraint; the objective value. The run's record (the
        plain model built from the trained ``weights``, its file, pictures, final metrics, end)
        is made in the tracking's recording thread while training goes on."""
        final = result.final
        for key, value in final.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr(MEASURES_ATTR, sorted(final))  # what its run's record must hold
        violation = self._constrain(trial, final)
        if run is not None and self.tracking is not None:
            if weights is None:
                raise ValueError("a tracked trial needs its trained weights")
            self.tracking.in_background(
                f"recording trial {trial.number}",
                lambda: self._record(run, cfg, result, weights, violation),
            )
        return final[OBJECTIVE]

    def _record(
        self,
        run,
        cfg: ExperimentConfig,
        result: Result,
        weights: list[np.ndarray],
        violation: float,
    ) -> None:
        assert self.tracking is not None
        result = replace(result, model=models.trained(cfg, weights))
        record_artifacts(
            run, result, self.data, cfg, figure_names=trial_figures(cfg, self.data), drawn=False
        )
        # the final metrics go in one write with the end tags
        record_final(run, result, cfg)
        run.log_metrics({CONSTRAINT_METRIC: violation}, step=cfg.train.epochs)
        self.tracking.end_trial(run, "COMPLETE", feasible=violation <= 0)

    def abort(self, run, state: str, reason: str) -> None:
        """End the trial's run as PRUNED or FAIL, with the reason."""
        if run is not None and self.tracking is not None:
            self.tracking.end_trial(run, state, reason=reason)
