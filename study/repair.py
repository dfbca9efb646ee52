"""Repair: the run of a COMPLETE trial that lacks its record gets it back.

A trial's run is tagged ``recorded=false`` when it is created, and ``recorded=true`` by the
writer's last write for it, once every write before has succeeded (study/recording.py). A worker
killed while its writes were still queued, or a tracking store that failed, leaves COMPLETE
trials whose runs lack their final metrics, tags or artefacts. When a study is opened and when
it is closed (by its coordinator: one process at a time, see docs/faults.md), each such trial
that nobody writes to any more (study/workers.py ``unattended``) is repaired:

- final metrics and the constraint from what Optuna stored (``trial_record``), those the run
  does not have yet;
- if an artefact or a per-epoch value is missing, its config is trained again (same seed, same
  trainer, several at once as a pack): its artefacts are written again from that model, and the
  per-epoch metrics of the epochs the run lacks from that history;
- its ``state`` and ``feasible`` tags, ``repaired`` (``retrained`` or ``re-logged``; ``pending``
  while it is repaired), the run ended FINISHED and, last, tagged ``recorded=true``.

A repair that fails (the store still failing) is counted; the run stays ``recorded=false`` and
is tried again the next time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from experiments.config import from_flat
from experiments.data import Dataset
from experiments.runner import Result, record_artifacts, train_all
from study.objective import CONSTRAINT_METRIC, TrialRecord, trial_record
from study.recording import StudyTracking
from study.results import RUN_ATTR
from study.workers import unattended
from tracking.runs import Run, Stored

REPAIRED = "repaired"  # run tag of a repaired run: "retrained" or "re-logged" ("pending")


@dataclass
class Repaired:
    """What one repair did: trial numbers retrained, re-logged only, or not repaired."""

    retrained: list[int] = field(default_factory=list)
    relogged: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.retrained) + len(self.relogged)

    def __iadd__(self, other: Repaired) -> Repaired:
        self.retrained += other.retrained
        self.relogged += other.relogged
        self.failed += other.failed
        return self


@dataclass
class _Plan:
    trial: FrozenTrial
    run: Run
    record: TrialRecord
    stored: Stored
    steps: dict[str, set[int]]  # the record's per-epoch metrics: the steps the run has
    result: Result | None = None

    @property
    def retrain(self) -> bool:
        epochs = set(range(1, self.record.epochs + 1))
        return not set(self.record.artifacts) <= self.stored.artifacts.keys() or any(
            not epochs <= steps for steps in self.steps.values()
        )


def repair(
    study: optuna.Study, track: StudyTracking | None, data: Dataset, slots: int | None = None
) -> Repaired:
    """Give every COMPLETE trial whose run is ``recorded=false``, and that nobody writes to any
    more, its record (see the module's docstring); ``slots`` trials are trained again at a
    time."""
    done = Repaired()
    if track is None:
        return done
    ids = track.unrecorded()
    trials = [
        t
        for t in unattended(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if t.user_attrs.get(RUN_ATTR) in ids
    ]
    plans = []
    for t in trials:
        plan = track.guarded(
            f"repairing the run of trial {t.number}", functools.partial(_plan, t, track, data), None
        )
        if plan is None:
            done.failed.append(t.number)
        else:
            plans.append(plan)
    again = [p for p in plans if p.retrain]
    if again:
        cfgs = [from_flat(p.trial.user_attrs["config"]) for p in again]
        for plan, result in zip(again, train_all(cfgs, data, slots), strict=True):
            plan.result = result
    by_kind = {"retrained": done.retrained, "re-logged": done.relogged, None: done.failed}
    for plan in plans:
        number = plan.trial.number
        if plan.retrain and plan.result is None:
            track.errors.append(f"repairing trial {number}: its training diverged this time")
            kind = None
        else:
            kind = track.guarded(
                f"repairing the run of trial {number}",
                functools.partial(_write, plan, track, data),
                None,
            )
        by_kind[kind].append(number)
    return done


def _plan(trial: FrozenTrial, track: StudyTracking, data: Dataset) -> _Plan:
    """What the trial's run has and lacks; the run is tagged ``repaired=pending`` (a store that
    still fails says so before any training)."""
    run = track.tracker.run(trial.user_attrs[RUN_ATTR])
    record = trial_record(trial, data)
    steps = {key: {s for s, _ in run.metric_history(key)} for key in record.histories}
    plan = _Plan(trial, run, record, run.stored(), steps)
    run.set_tags({REPAIRED: "pending"})
    return plan


def _write(plan: _Plan, track: StudyTracking, data: Dataset) -> str:
    """Write what the run lacks; how it was repaired ("retrained" or "re-logged")."""
    run, record, result = plan.run, plan.record, plan.result
    run.log_params(plan.trial.user_attrs["config"])  # the same values again: MLflow keeps them
    present = set(plan.stored.metrics)
    if result is not None:
        have = {key: {s for s, _ in run.metric_history(key)} for key in result.history}
        missing = [
            ({k: v[i] for k, v in result.history.items() if i + 1 not in have[k]}, i + 1)
            for i in range(record.epochs)
        ]
        run.log_metric_steps([(values, step) for values, step in missing if values])
        present |= set(result.history)
        cfg = from_flat(plan.trial.user_attrs["config"])
        record_artifacts(run, result, data, cfg, figure_names=record.figures, drawn=False)
    run.log_metrics(
        {k: v for k, v in record.metrics.items() if k not in present}, step=record.epochs
    )
    kind = "retrained" if result is not None else "re-logged"
    run.set_tags({REPAIRED: kind})
    track.end_trial(run, "COMPLETE", feasible=record.metrics[CONSTRAINT_METRIC] <= 0)
    return kind
