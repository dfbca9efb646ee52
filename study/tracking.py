"""A study in MLflow: one experiment named after the study, one parent run for the study, and
one child run per trial named by the trial number.

The trial's Optuna state is mirrored as a tag and as the run status (COMPLETE → FINISHED,
PRUNED → KILLED, FAIL → FAILED). The Optuna trial stores its run id (user attr
``mlflow_run_id``); the run stores the study name and trial number. Each trial logs through its
own run id, so parallel trials never wait on each other. Everything but opening a run is
written by a ``Writer`` in a process of its own (tracking/writer.py), so training does not wait
for MLflow; ``close`` waits for it.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from experiments.config import ExperimentConfig
from tracking.runs import Run, Tracker, TrackingError, has_run, mask, tracking_uri
from tracking.writer import QueuedRun, Writer

RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
PARENT_ATTR = "mlflow_parent_run_id"  # study user attr: the study's parent run
TRACKING_ATTR = "mlflow_tracking_uri"  # study user attr: the store of its runs, password masked


class StudyTracking:
    def __init__(self, tracker: Tracker, study_name: str, parent: Run):
        self.tracker, self.study_name, self.parent = tracker, study_name, parent
        self.writer = Writer(tracker.uri)
        self.parent_log = QueuedRun(self.writer, parent.run_id)  # the study's running metrics

    @classmethod
    def open(cls, study: optuna.Study, tags: dict[str, str], uri: str | None = None
             ) -> "StudyTracking":
        """Open the study's parent run (creating it on first use) and mark it RUNNING. A study
        resumed with a tracking store that does not hold its parent run raises TrackingError,
        naming the store it started with, before anything is written."""
        run_id = study.user_attrs.get(PARENT_ATTR)
        if run_id is not None and not has_run(tracking_uri(uri), run_id):
            raise TrackingError(_elsewhere(study, tracking_uri(uri)))
        tracker = Tracker(study.study_name, uri)
        if run_id is None:
            parent = tracker.start_run(f"study {study.study_name}", tags=tags)
            study.set_user_attr(PARENT_ATTR, parent.run_id)
        else:
            parent = tracker.run(run_id)
            parent.reopen()
            parent.set_tags(tags)
        if study.user_attrs.get(TRACKING_ATTR) != mask(tracker.uri):  # new, or a moved store
            study.set_user_attr(TRACKING_ATTR, mask(tracker.uri))
        return cls(tracker, study.study_name, parent)

    def start_trial(self, number: int, cfg: ExperimentConfig, tags: dict[str, str]
                    ) -> QueuedRun:
        """Create the trial's run now (its id goes into the trial); what it logs is queued."""
        run = self.tracker.start_run(
            str(number), params=cfg.flat(), parent=self.parent,
            tags={**tags, "study": self.study_name, "trial": number, "state": "RUNNING"})
        return QueuedRun(self.writer, run.run_id)

    def end_trial(self, run: Run | QueuedRun, state: str, reason: str | None = None,
                  feasible: bool | None = None) -> None:
        """End a trial's run: its state as a tag and as the run status, with the reason or
        feasibility."""
        tags: dict[str, object] = {"state": state}
        if reason:
            tags["reason"] = reason.splitlines()[0][:500]
        if feasible is not None:
            tags["feasible"] = str(feasible).lower()
        run.set_tags(tags)
        run.finish(RUN_STATUS[state])

    def reconcile(self, trials: list[optuna.trial.FrozenTrial]) -> int:
        """End every trial run still RUNNING whose Optuna trial has ended (a killed worker);
        returns how many were fixed."""
        self.writer.flush()  # runs this process has ended but not yet written are not dead
        running = self.tracker.running_run_ids()
        fixed = 0
        for t in trials:
            run_id = t.user_attrs.get("mlflow_run_id")
            if run_id in running and t.state != TrialState.RUNNING:
                self.end_trial(self.tracker.run(run_id),
                               t.state.name if t.state.name in RUN_STATUS else "FAIL",
                               reason="worker stopped before it could end this run")
                fixed += 1
        return fixed

    def close(self, status: str = "FINISHED", end_parent: bool = True) -> None:
        """Wait until every queued write is done, then end the study's run (the coordinator of
        a parallel study does, its helper workers do not)."""
        self.parent_log.flush()
        self.writer.close()
        if end_parent:
            self.parent.finish(status)


def _elsewhere(study: optuna.Study, uri: str) -> str:
    """What to tell a user who resumes ``study`` with the tracking store ``uri``, which does not
    hold its runs."""
    where = study.user_attrs.get(TRACKING_ATTR)
    start = f"study {study.study_name!r} keeps its MLflow runs in "
    if where is None:  # a study from before the store was recorded
        return (f"{start}another tracking store than {mask(uri)} (its parent run is not there): "
                f"resume it with the --tracking-uri it started with, or pick a new --study-name")
    return (f"{start}{where}, not {mask(uri)}: resume it with --tracking-uri {where} (or that "
            f"MLFLOW_TRACKING_URI), or pick a new --study-name")
