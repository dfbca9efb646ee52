"""Worker processes of one study: who runs which trial, and what happens when one dies.

Every trial carries the ``host:pid:start`` of the process running it (user attr ``worker``,
written by the storage as the trial starts, see study/storage.py; ``start`` is the process's start
time, so that a later process given the same id is not taken for it). A trial whose worker is
gone is failed, queued once more with the same parameters (Optuna's
RetryHeartbeatStaleTrialCallback, up to ``RETRIES`` times; the new trial's user attr ``retry_of``
names the dead trial) and its MLflow run ended FAILED:

- workers on this machine: by process id, whenever a worker of the study opens it or finishes a
  trial, and when the study's first worker closes it;
- workers on other machines, on a database storage: by Optuna's heartbeats (a trial silent for
  four heartbeats is failed by the next worker that starts a trial).
"""

from __future__ import annotations

import copy
import os
import socket
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from study.results import RUN_ATTR

if TYPE_CHECKING:
    from study.recording import StudyTracking

WORKER_ATTR = "worker"  # trial user attr: host:pid:start of the process that runs the trial
RETRY_ATTR = "retry_of"  # user attr and run tag of a retry: the number of the trial it repeats
FAIL_REASON = "fail_reason"  # user attr of a FAIL trial: why (divergence, error, its worker gone)
WORKER_GONE = "its worker stopped"  # the fail reason of a trial whose worker died
# a trial is labelled within milliseconds of being taken from the queue; one still unlabelled
# after this long belongs to a worker killed in between
UNLABELLED_SECONDS = 60
RETRIES = 3  # times a dead worker's trial is run again
# a trial's run still unrecorded this long after the trial ended, its worker on another machine
# (whose life cannot be looked at from here), is taken to have lost its writes
RECORD_GRACE_SECONDS = 3600
PROC = Path("/proc")  # Linux's process table; elsewhere a worker is known by its pid alone


def _stat(pid: int) -> list[str] | None:
    """Fields 3 and on of /proc/<pid>/stat (state first, start time 20th), or None. The
    command name (field 2) may hold spaces and parentheses: the fields follow its last ')'."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def worker_id() -> str:
    """host:pid:start of this process (start: clock ticks from boot to its start, field 22 of
    /proc/<pid>/stat), stored on each trial so a later run can tell if it died; host:pid where
    there is no /proc."""
    stat = _stat(os.getpid())
    return f"{socket.gethostname()}:{os.getpid()}" + (f":{stat[19]}" if stat else "")


def parse_worker(label: str) -> tuple[str, int | None, str | None]:
    """(host, pid, start) of a worker label: ``host:pid:start``, or ``host:pid`` as written
    where there is no /proc and by earlier versions (start None); pid None if unreadable."""
    parts = label.split(":")
    if len(parts) >= 3 and parts[-1].isdigit() and parts[-2].isdigit():
        return ":".join(parts[:-2]), int(parts[-2]), parts[-1]
    if len(parts) >= 2 and parts[-1].isdigit():
        return ":".join(parts[:-1]), int(parts[-1]), None
    return label, None, None


def worker_alive(worker: str) -> bool | None:
    """True/False for a worker on this host, None when it ran elsewhere (cannot tell). A process
    that has ended but is not yet reaped (a zombie), or another process that was given the
    worker's pid later (its start time differs), is not the worker."""
    host, pid, start = parse_worker(worker)
    if host != socket.gethostname() or pid is None:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process has the pid: /proc tells whose start time it has
    stat = _stat(pid)
    if stat is None:  # no /proc here: the pid alone; else the process ended meanwhile
        return not PROC.is_dir()
    return stat[0] not in ("Z", "X") and (start is None or stat[19] == start)


class Retry(RetryHeartbeatStaleTrialCallback):
    """Queue a dead worker's trial once more, with its parameters and Optuna's retry history
    (system attr ``retry_history``). Of its user attrs the copy has only ``retry_of``, the
    number of the dead trial: its worker, run id and measures belong to the dead trial. A trial
    is run at most ``RETRIES`` more times: one that kills every worker that runs it would
    otherwise take the whole study down."""

    def __init__(self) -> None:
        super().__init__(max_retry=RETRIES)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        bare = copy.copy(trial)
        bare.user_attrs = {RETRY_ATTR: trial.number}
        super().__call__(study, bare)


def retries_left(trial: FrozenTrial) -> bool:
    """Whether ``trial``, should its worker die, is run again."""
    return len(trial.system_attrs.get("retry_history", [])) < RETRIES


def failed_with_worker(trial: FrozenTrial) -> bool:
    """Whether a FAIL trial failed because its worker died (one failed by Optuna's heartbeat
    check carries no reason)."""
    return trial.user_attrs.get(FAIL_REASON, WORKER_GONE).startswith(WORKER_GONE)


def retry_tags(trial: optuna.Trial) -> dict[str, object]:
    """``{"retry_of": n}`` for a retry of trial n, else nothing: tags for the trial's run."""
    return {k: v for k, v in trial.user_attrs.items() if k == RETRY_ATTR}


def _dead(trial: FrozenTrial, now: datetime) -> bool:
    worker = trial.user_attrs.get(WORKER_ATTR)
    if worker is None:
        return trial.datetime_start is not None and now - trial.datetime_start > timedelta(
            seconds=UNLABELLED_SECONDS
        )
    return worker_alive(worker) is False


def _fail_dead(study: optuna.Study) -> tuple[int, list[FrozenTrial]]:
    """Fail the RUNNING trials whose worker is gone and queue each once more: how many of the
    trials running before are now failed, and those this call failed (others may race it)."""
    storage = study._storage
    running = {t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)  # heartbeats, retried by the storage; journal: no-op
    now = datetime.now()
    won = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _dead(t, now):
            continue
        try:
            storage.set_trial_user_attr(
                t._trial_id, FAIL_REASON, f"{WORKER_GONE} ({t.user_attrs.get(WORKER_ATTR, '?')})"
            )
            if not storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # another worker failed it first, and retries it
            continue
        won.append(storage.get_trial(t._trial_id))
        Retry()(study, won[-1])
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return sum(t._trial_id in running for t in failed), won


def fail_dead_trials(study: optuna.Study) -> int:
    """Fail the RUNNING trials whose worker is gone and queue each once more; returns how many
    of the trials running before this call are now failed."""
    return _fail_dead(study)[0]


def unattended(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The ended trials nobody writes to the runs of any more: failed with their worker, or
    their worker has ended, or is this process (whose writer the caller has flushed), or ran on
    another machine and the trial ended more than RECORD_GRACE_SECONDS ago (it cannot be
    asked)."""
    now, me, alive = datetime.now(), worker_id(), {}

    def gone(t: FrozenTrial) -> bool:
        if t.state == TrialState.FAIL and failed_with_worker(t):  # ours or Optuna's verdict
            return True
        label = t.user_attrs.get(WORKER_ATTR)
        if label == me:
            return True
        if label not in alive:
            alive[label] = None if label is None else worker_alive(label)
        if alive[label] is None:
            return t.datetime_complete is not None and now - t.datetime_complete > timedelta(
                seconds=RECORD_GRACE_SECONDS
            )
        return not alive[label]

    return [t for t in trials if t.state.is_finished() and gone(t)]


def _reconcile(study: optuna.Study, track: StudyTracking, won: list[FrozenTrial]) -> int:
    return track.reconcile(
        unattended(study.get_trials(deepcopy=False)),
        lost=[t for t in won if RUN_ATTR not in t.user_attrs],
    )


def recover(study: optuna.Study, track: StudyTracking | None) -> int:
    """Fail the trials of dead workers (queued once more) and end the runs of ended trials
    nobody writes to any more (study/repair.py gives the COMPLETE ones their record); returns
    how many runs it ended or created, or without tracking how many trials it failed."""
    failed, won = _fail_dead(study)
    return _reconcile(study, track, won) if track else failed


class Recovery:
    """Study callback: after each trial, fail the trials of workers that died meanwhile, and end
    their runs when a trial has failed elsewhere since the last look (the search for RUNNING
    runs is spared when nothing failed)."""

    def __init__(self, study: optuna.Study, track: StudyTracking | None):
        self.track = track
        self.failed = self._failed(study)

    @staticmethod
    def _failed(study: optuna.Study) -> set[int]:
        return {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        _, won = _fail_dead(study)
        failed = self._failed(study)
        if self.track is not None and failed - self.failed - {trial.number}:
            _reconcile(study, self.track, won)
        self.failed = failed
