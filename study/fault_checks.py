"""The fault drill's checks (study/faults.py): what one drill found, what each of its two phases
must leave in the study and the tracking store, and what the run of each ended trial must hold.

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

import optuna
from optuna.trial import FrozenTrial, TrialState

from experiments.data import Dataset
from study.objective import CONSTRAINT_METRIC, trial_record
from study.recording import RUN_STATUS
from study.results import OBJECTIVE, RUN_ATTR
from study.workers import RETRIES, RETRY_ATTR, failed_with_worker, retries_left
from tracking.runs import Run, Tracker

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


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


def phase1(drill: Drill, study: optuna.Study, tracker: Tracker, n: int) -> None:
    """Phase 1: ``n`` trials by workers that all lived, each finished with exactly one run."""
    trials = study.get_trials()
    finished = [t for t in trials if t.state in FINISHED]
    parents, children = study_runs(tracker)
    one_run = sum(
        len(children.get(t.number, [])) == 1
        and children[t.number][0].info.run_id == t.user_attrs.get("mlflow_run_id")
        for t in finished
    )
    running = sum(r.info.status == "RUNNING" for rs in children.values() for r in rs)
    drill.phase1 = {
        "trials": len(trials),
        "finished": len(finished),
        "unique_numbers": len({t.number for t in finished}),
        "with_one_run": one_run,
        "running_runs": running,
    }
    print(
        f"  {len(finished)} finished trials of {len(trials)}, "
        f"{drill.phase1['unique_numbers']} unique numbers, {one_run} with exactly one child "
        f"run, {running} runs RUNNING",
        flush=True,
    )
    drill.check(
        len(finished) == len(trials) == n,
        f"phase 1: {len(finished)} finished trials of {len(trials)}, expected {n}",
    )
    drill.check(
        sorted(t.number for t in finished) == list(range(n)),
        "phase 1: trial numbers are not 0..n-1",
    )
    drill.check(one_run == n, f"phase 1: {n - one_run} finished trials without exactly one run")
    drill.check(running == 0, f"phase 1: {running} runs still RUNNING")
    drill.check(
        len(parents) == 1 and parents[0].info.status == "FINISHED",
        "phase 1: the study's parent run is missing or not FINISHED",
    )


def phase2(
    drill: Drill,
    study: optuna.Study,
    tracker: Tracker,
    before: dict,
    killed: dict[int, int],
    n: int,
) -> None:
    """Phase 2: workers killed at random; phase 1's trials unchanged, every killed trial FAIL and
    retried or given up, no run left RUNNING, one run per finished trial."""
    trials = study.get_trials()
    by_number = {t.number: t for t in trials}
    kept = sum(
        (t := by_number.get(k)) is not None and (t.state, t.value) == v for k, v in before.items()
    )
    states = Counter(t.state.name for t in trials)
    retries = {t.user_attrs[RETRY_ATTR]: t for t in trials if RETRY_ATTR in t.user_attrs}
    given_up = [k for k in killed if not retries_left(by_number[k])]
    dead = [t for t in trials if t.state == TrialState.FAIL]
    # a killed worker takes its whole pack with it; a diverging trial fails by design (no retry)
    stopped = [t for t in dead if failed_with_worker(t)]
    stopped_given_up = [t for t in stopped if t.number not in retries and not retries_left(t)]
    parents, children = study_runs(tracker)
    statuses = Counter(r.info.status for rs in children.values() for r in rs)
    extra_runs = sum(len(rs) > 1 for rs in children.values())
    finished = [t for t in trials if t.state in FINISHED]
    one_run = sum(len(children.get(t.number, [])) == 1 for t in finished)
    retried = sum(k in retries for k in killed)
    drill.phase2 |= {
        "kills": len(killed),
        "trials": len(trials),
        "finished": len(finished),
        "failed": len(dead),
        "failed_with_worker": len(stopped),
        "retried": sum(t.number in retries for t in stopped),
        "given_up": len(stopped_given_up),
        "diverged": len(dead) - len(stopped),
        "running": states["RUNNING"],
        "waiting": states["WAITING"],
        "phase1_kept": kept,
        "runs": sum(statuses.values()),
        "runs_running": statuses["RUNNING"],
        "runs_failed": statuses["FAILED"],
        "runs_finished": statuses["FINISHED"],
    }
    p = drill.phase2
    print(
        f"  {p['trials']} trials: {p['finished']} finished, {p['failed']} failed: "
        f"{p['failed_with_worker']} with their killed worker (its whole pack; {p['retried']} "
        f"retried, {p['given_up']} given up after {RETRIES} tries), {p['diverged']} diverged "
        f"(not retried); {p['running']} RUNNING, {p['waiting']} waiting"
    )
    print(
        f"  {p['runs']} child runs: {p['runs_finished']} FINISHED, {p['runs_failed']} FAILED, "
        f"{p['runs_running']} RUNNING; {kept} of {len(before)} phase-1 trials unchanged",
        flush=True,
    )
    drill.check(kept == len(before), f"{len(before) - kept} trials finished in phase 1 changed")
    drill.check(
        p["finished_by_workers"] == n,
        f"phase 2 workers finished {p['finished_by_workers']} trials, not {n}",
    )
    drill.check(
        all(by_number[k].state == TrialState.FAIL for k in killed), "a killed trial is not FAIL"
    )
    drill.check(
        retried == len(killed) - len(given_up),
        f"{len(killed) - len(given_up) - retried} killed trials never retried",
    )
    drill.check(
        p["retried"] + p["given_up"] == len(stopped),
        f"{len(stopped) - p['retried'] - p['given_up']} trials of killed workers neither "
        f"retried nor given up",
    )
    drill.check(
        p["running"] == 0 and p["waiting"] == 0,
        f"{p['running']} trials RUNNING and {p['waiting']} queued after the study ended",
    )
    drill.check(p["runs_running"] == 0, f"{p['runs_running']} runs RUNNING after the study ended")
    drill.check(extra_runs == 0, f"{extra_runs} trials with more than one run")
    drill.check(
        one_run == len(finished),
        f"{len(finished) - one_run} finished trials without exactly one run",
    )
    drill.check(
        all(r.info.status == "FINISHED" for r in parents), "the study's parent run is not FINISHED"
    )
