"""The fault drill's checks (study/faults.py): what one drill found, and what the run of each ended
trial must hold.

The runs are checked for what they hold, not counted (``record_problems``): every COMPLETE
trial's run is FINISHED with its whole record (``study.objective.trial_record``: final metrics
and constraint, every epoch's objective and constraint, ``state``, ``feasible`` and ``recorded``
tags, figures, model, config and history), every FAIL trial has a FAILED run with a reason (a
trial without a run fails the check).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial, TrialState

from experiments.data import Dataset
from study.objective import CONSTRAINT_METRIC, trial_record
from study.recording import RUN_STATUS
from study.results import OBJECTIVE, RUN_ATTR
from tracking.runs import Run, Tracker


@dataclass
class Drill:
    """What one drill did and found; ``problems`` is empty when every check passed."""

    study: str
    phase1: dict[str, int] = field(default_factory=dict)
    phase2: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


def study_runs(tracker: Tracker) -> tuple[list, dict[int, list]]:
    """The study's parent runs, and its child runs by trial number (the runs of confirmation
    and baseline seeds, tagged ``kind``, are neither)."""
    runs = tracker.client.search_runs([tracker.experiment_id], max_results=50000)
    children: dict[int, list] = {}
    for r in runs:
        if "trial" in r.data.tags:
            children.setdefault(int(r.data.tags["trial"]), []).append(r)
    return [r for r in runs if "trial" not in r.data.tags and "kind" not in r.data.tags], children


def _run_ids(tracker: Tracker, trials: list[FrozenTrial]) -> dict[int, str | None]:
    """Each trial's run: the one its ``mlflow_run_id`` names, else the one tagged with its
    number (a trial failed before its run was made gets one tagged so); None if it has none
    (a deleted run is none)."""
    parents, children = study_runs(tracker)
    ids = {r.info.run_id for r in parents} | {r.info.run_id for rs in children.values() for r in rs}
    out = {}
    for t in trials:
        run_id = t.user_attrs.get(RUN_ATTR)
        tagged = [r.info.run_id for r in children.get(t.number, [])]
        out[t.number] = (
            run_id
            if run_id in ids
            else (tagged[0] if run_id is None and len(tagged) == 1 else None)
        )
    return out


def record_problems(trial: FrozenTrial, run: Run | None, data: Dataset) -> list[str]:
    """What the run of an ended trial lacks: a COMPLETE trial's run must be FINISHED and hold
    its ``trial_record``; a FAIL (PRUNED) trial's run be FAILED (KILLED) with a reason."""
    if run is None:
        return ["no run"]
    stored = run.stored()
    state = trial.state.name
    problems = []
    if stored.status != RUN_STATUS[state]:
        problems.append(f"run {stored.status}, not {RUN_STATUS[state]}")
    if trial.state != TrialState.COMPLETE:
        if stored.tags.get("state") != state or not stored.tags.get("reason"):
            problems.append(
                f"tags state={stored.tags.get('state')} reason="
                f"{stored.tags.get('reason')!r}, not state={state} and a reason"
            )
        return problems
    record = trial_record(trial, data)
    missing = sorted(set(record.metrics) - set(stored.metrics))
    if missing:
        problems.append(f"metrics missing: {', '.join(missing)}")
    for key, rel in ((CONSTRAINT_METRIC, 1e-9), (OBJECTIVE, 1e-3)):
        if key in stored.metrics and not math.isclose(
            stored.metrics[key], record.metrics[key], rel_tol=rel, abs_tol=1e-9
        ):
            problems.append(f"{key}={stored.metrics[key]!r}, Optuna has {record.metrics[key]!r}")
    wrong = [f"{k}={stored.tags.get(k)}" for k, v in record.tags.items() if stored.tags.get(k) != v]
    if wrong:
        problems.append(f"tags {', '.join(wrong)}, not {record.tags}")
    lacking = sorted(set(record.artifacts) - stored.artifacts.keys())
    if lacking:
        problems.append(f"artefacts missing: {', '.join(lacking)}")
    epochs = set(range(1, record.epochs + 1))
    for key in record.histories:
        gaps = sorted(epochs - {step for step, _ in run.metric_history(key)})
        if gaps:
            problems.append(f"{key} not logged after epochs {gaps}")
    return problems


def check_records(
    drill: Drill, trials: list[FrozenTrial], tracker: Tracker, data: Dataset, phase: str
) -> dict[str, int]:
    """``record_problems`` of every ended trial's run, each a failed check of ``drill``;
    returns how many COMPLETE and how many FAIL or PRUNED trials have all their run should."""
    ended = [t for t in trials if t.state.is_finished()]
    run_ids = _run_ids(tracker, ended)
    whole: Counter[bool] = Counter()
    for t in ended:
        run_id = run_ids[t.number]
        problems = record_problems(t, None if run_id is None else tracker.run(run_id), data)
        whole[t.state == TrialState.COMPLETE] += not problems
        for problem in problems:
            drill.check(False, f"{phase}: {t.state.name} trial {t.number}: {problem}")
    complete = sum(t.state == TrialState.COMPLETE for t in ended)
    print(
        f"  {whole[True]} of {complete} COMPLETE trials' runs hold their whole record, "
        f"{whole[False]} of {len(ended) - complete} failed or pruned trials' runs are ended "
        f"with a reason",
        flush=True,
    )
    return {"complete_recorded": whole[True], "ended_with_reason": whole[False]}


def snapshot(tracker: Tracker, trials: list[FrozenTrial]) -> dict[int, tuple | None]:
    """What each trial's run holds, to compare later: status, tags, every metric's history,
    artefact files and sizes."""
    out: dict[int, tuple | None] = {}
    for number, run_id in _run_ids(tracker, trials).items():
        if run_id is None:
            out[number] = None
            continue
        run = tracker.run(run_id)
        stored = run.stored()
        histories = {
            key: [(step, repr(v)) for step, v in run.metric_history(key)]  # NaN too
            for key in sorted(stored.metrics)
        }
        out[number] = (stored.status, stored.tags, histories, stored.artifacts)
    return out
