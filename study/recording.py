"""A study in MLflow: one experiment named after the study, one parent run for the study, and
one child run per trial named by the trial number.

The trial's Optuna state is mirrored as a tag and as the run status (COMPLETE → FINISHED,
PRUNED → KILLED, FAIL → FAILED). The Optuna trial stores its run id (user attr
``mlflow_run_id``); the run stores the study name and trial number. Each trial logs through its
own run id, so parallel trials never wait on each other. Everything but opening a run is
written by a ``Writer`` in a process of its own (tracking/writer.py), so training does not wait
for MLflow; ``close`` waits for it. A trial's run is tagged ``recorded=false`` when it is
created and ``recorded=true`` by the writer's last write for it, once every write before has
succeeded; a run left ``false`` by a killed worker or a failing store is repaired when the study
is next opened or closed (study/repair.py, docs/faults.md).

A store that fails while the study runs is counted and named (``failures``), never a crash of
the training: only a trial's run that cannot be created stops the asking of new trials.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from experiments.config import ExperimentConfig
from study.results import RUN_ATTR
from tracking.runs import RECORDED, Run, Tracker, has_run
from tracking.store import TrackingError, TrackingFailed, mask, tracking_uri
from tracking.writer import QueuedRun, Writer

RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
PARENT_ATTR = "mlflow_parent_run_id"  # study user attr: the study's parent run
TRACKING_ATTR = "mlflow_tracking_uri"  # study user attr: the store of its runs, password masked
WORKER_STOPPED = "worker stopped before it could end this run"  # reason of a run ended for it
T = TypeVar("T")


def end_tags(state: str, reason: str | None = None, feasible: bool | None = None) -> dict[str, str]:
    """The tags a trial's run ends with: its state, with why it ended or whether it is
    feasible."""
    tags = {"state": state}
    if reason:
        tags["reason"] = reason.splitlines()[0][:500]
    if feasible is not None:
        tags["feasible"] = str(feasible).lower()
    return tags


def _failed(what: str, err: Exception) -> TrackingFailed:
    first = (str(err).strip().splitlines() or [""])[0][:300]
    return TrackingFailed(f"{what}: {type(err).__name__}: {first}")


class StudyTracking:
    def __init__(self, tracker: Tracker, study_name: str, parent: Run):
        self.tracker, self.study_name, self.parent = tracker, study_name, parent
        self.writer = Writer(tracker.uri)
        # the study's running metrics
        self.parent_log = QueuedRun(self.writer, parent.run_id, what="the study's run")
        self.errors: list[str] = []  # what failed in this process, beside the writer's writes
        # finished trials' models built and saved, their last writes queued, while training goes
        # on (the compiled epoch leaves Python's lock free): one thread, in the order given
        self._recording = ThreadPoolExecutor(1, thread_name_prefix="recording")
        self._given: list[Future] = []

    @classmethod
    def open(
        cls, study: optuna.Study, tags: dict[str, str], uri: str | None = None
    ) -> StudyTracking:
        """Open the study's parent run (creating it on first use) and mark it RUNNING. A study
        resumed with a tracking store that does not hold its parent run raises TrackingError,
        naming the store it started with, before anything is written; a store that fails
        raises TrackingFailed, in one line."""
        run_id = study.user_attrs.get(PARENT_ATTR)
        if run_id is not None and not has_run(tracking_uri(uri), run_id):
            raise TrackingError(_elsewhere(study, tracking_uri(uri)))
        try:
            tracker = Tracker(study.study_name, uri)
            if run_id is None:
                parent = tracker.start_run(f"study {study.study_name}", tags=tags)
                study.set_user_attr(PARENT_ATTR, parent.run_id)
            else:
                parent = tracker.run(run_id)
                parent.reopen()
                parent.set_tags(tags)
        except TrackingFailed:
            raise
        except Exception as err:  # whatever the store raises: one line for the user
            raise _failed("cannot open the study's run", err) from err
        if study.user_attrs.get(TRACKING_ATTR) != mask(tracker.uri):  # new, or a moved store
            study.set_user_attr(TRACKING_ATTR, mask(tracker.uri))
        return cls(tracker, study.study_name, parent)

    def start_trial(
        self, number: int, cfg: ExperimentConfig, tags: Mapping[str, object]
    ) -> QueuedRun:
        """Create the trial's run now (its id goes into the trial); what it logs is queued.
        Raises TrackingFailed if the store cannot create it."""
        try:
            run = self.tracker.start_run(
                str(number),
                parent=self.parent,
                tags={
                    **tags,
                    "study": self.study_name,
                    "trial": number,
                    "state": "RUNNING",
                    RECORDED: "false",
                },
            )
        except Exception as err:
            failed = _failed(f"cannot create the run of trial {number}", err)
            self.errors.append(str(failed))
            raise failed from err
        queued = QueuedRun(self.writer, run.run_id, what=f"trial {number}")
        queued.log_params(cfg.flat())  # written with the rest: creating the run is one write
        return queued

    def end_trial(
        self,
        run: Run | QueuedRun,
        state: str,
        reason: str | None = None,
        feasible: bool | None = None,
        recorded: bool = True,
    ) -> None:
        """End a trial's run: its state as a tag and as the run status, with the reason or
        feasibility; then, if ``recorded``, mark it recorded (a queued run only if every write
        to it succeeded)."""
        run.set_tags(end_tags(state, reason, feasible))
        run.finish(RUN_STATUS[state])
        if recorded:
            run.mark_recorded()

    def in_background(self, what: str, call: Callable[[], None]) -> None:
        """``call()`` in the recording thread, after everything given before it; if it fails, it
        is counted and named in ``failures`` (``what`` says what failed), as a store's failure
        is, and the study goes on."""
        self._given.append(self._recording.submit(self.guarded, what, call, None))

    def drain(self) -> None:
        """Wait until the recording thread has done everything given to it so far, and its
        writes are queued."""
        given, self._given = self._given, []
        for future in given:
            future.result()

    def reconcile(self, trials: list[FrozenTrial], lost: Sequence[FrozenTrial] = ()) -> int:
        """End the runs still RUNNING of ``trials``, ended trials whose worker is gone, and give
        each trial of ``lost``, failed before its run was created, a FAILED run, so that every
        trial has one. Runs of COMPLETE trials are left to the repair (study/repair.py) but for
        those of earlier versions, without the ``recorded`` tag. Returns how many runs it ended
        or created; a failing store is counted in ``errors``."""
        return self.guarded(
            "ending the runs of stopped workers", lambda: self._reconcile(trials, lost), 0
        )

    def _reconcile(self, trials: list[FrozenTrial], lost: Sequence[FrozenTrial]) -> int:
        self.drain()  # runs this process has ended but not yet written are not dead
        self.writer.flush()
        running = self.tracker.running_runs()
        fixed = 0
        for t in trials:
            run_id = t.user_attrs.get(RUN_ATTR)
            if run_id not in running or t.state == TrialState.RUNNING:
                continue
            if t.state == TrialState.COMPLETE and RECORDED in running[run_id]:
                continue  # the repair gives it its record and ends it
            self.end_trial(
                self.tracker.run(run_id),
                t.state.name if t.state.name in RUN_STATUS else "FAIL",
                reason=WORKER_STOPPED,
                recorded=False,
            )
            fixed += 1
        for t in lost:
            run = self.tracker.start_run(
                str(t.number),
                params=t.user_attrs.get("config") or t.params,
                parent=self.parent,
                tags={"study": self.study_name, "trial": t.number, RECORDED: "false"},
            )
            self.end_trial(
                run, "FAIL", reason="its worker stopped before the run was created", recorded=False
            )
            fixed += 1
        return fixed

    def unrecorded(self) -> set[str]:
        """Ids of this study's runs tagged ``recorded=false`` (none if the store fails)."""
        self.drain()  # this process's own runs: recorded by now, unless writes failed
        self.writer.flush()
        return self.guarded(
            "looking for unrecorded runs",
            lambda: set(self.tracker.tagged(RECORDED, "false")),
            set(),
        )

    def failures(self) -> str:
        """What failed so far, in one line ("" if nothing did): the writer's failed writes and
        the failures of this process's own calls."""
        parts = [self.writer.summary(), *self.errors[:1]]
        more = len(self.errors) - 1
        return "; ".join(p for p in parts if p) + (f" (and {more} more)" if more > 0 else "")

    def guarded(self, what: str, call: Callable[[], T], default: T) -> T:
        """``call()``, or ``default`` if the store fails: then counted and named in
        ``failures``, and the study goes on."""
        try:
            return call()
        except Exception as err:  # whatever the store raises
            self.errors.append(str(_failed(what, err)))
            return default

    def close(self, status: str = "FINISHED", end_parent: bool = True) -> None:
        """Wait until every queued write is done, then end the study's run (the coordinator of
        a parallel study does, its helper workers do not)."""
        self.drain()
        self._recording.shutdown()
        self.parent_log.flush()
        self.writer.close()
        if end_parent:
            self.guarded("ending the study's run", lambda: self.parent.finish(status), None)


def _elsewhere(study: optuna.Study, uri: str) -> str:
    """What to tell a user who resumes ``study`` with the tracking store ``uri``, which does not
    hold its runs."""
    where = study.user_attrs.get(TRACKING_ATTR)
    start = f"study {study.study_name!r} keeps its MLflow runs in "
    if where is None:  # a study from before the store was recorded
        return (
            f"{start}another tracking store than {mask(uri)} (its parent run is not there): "
            f"resume it with the --tracking-uri it started with, or pick a new --study-name"
        )
    return (
        f"{start}{where}, not {mask(uri)}: resume it with --tracking-uri {where} (or that "
        f"MLFLOW_TRACKING_URI), or pick a new --study-name"
    )
