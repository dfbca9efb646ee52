"""The trial loop: Optuna's ask/tell around a ``PackedTrainer`` whose slots are trials.

Asks as many trials as the pack has slots and trains them together. After every epoch each
trial's values are recorded and reported to the pruner on their own; a trial that is pruned,
diverges (NaN or infinite: FAIL, the study goes on) or has trained its epochs is told to Optuna
and its slot is given the next trial at once, until ``n_trials`` have been asked or ``timeout``
seconds have passed; the trials in the pack then train to their end. A pack of one slot is the
unpacked study: one trial after another.

If anything stops the loop (Ctrl-C, an error), every trial still in the pack is told FAIL and its
run ended before the exception goes on. A trial whose run cannot be created (the tracking store
fails) is told FAIL and no more trials are asked (``stopped`` says why); those in the pack train
to their end.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from experiments.config import ExperimentConfig
from experiments.data import Dataset
from experiments.packed import PackedTrainer
from experiments.runner import measured
from experiments.train import EpochHook, History, TrainingDiverged, check_finite
from study import interrupt
from study.objective import Objective
from study.workers import FAIL_REASON
from tracking.store import TrackingFailed

StudyCallback = Callable[[optuna.Study, FrozenTrial], None]


@dataclass
class _Live:
    """A trial training in a slot."""

    trial: optuna.Trial
    cfg: ExperimentConfig
    run: object  # tracking's Run, or None without tracking
    hooks: list[EpochHook]
    history: History
    start: float = field(default_factory=time.perf_counter)


class _Heartbeat:
    """Optuna beats for a trial only inside ``study.optimize``; an ask/tell loop beats itself.
    Every ``interval`` seconds (the storage's; RDB storages only), each live trial's heartbeat
    is recorded, so workers that opened the study can tell when this one died."""

    def __init__(self, study: optuna.Study, live: dict[int, _Live]):
        storage = study._storage
        self.interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
        self.storage, self.live, self.stop = storage, live, threading.Event()
        if self.interval:
            threading.Thread(target=self._beat, name="heartbeat", daemon=True).start()

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.beat()
            except Exception as err:  # noqa: BLE001 - the storage retried already; beat on
                print(
                    f"warning: heartbeat not recorded: {type(err).__name__}",
                    file=sys.stderr,
                    flush=True,
                )

    def beat(self, trial: optuna.Trial | None = None) -> None:
        if self.interval:
            for t in [trial] if trial else [live.trial for live in list(self.live.values())]:
                # beat() runs only where the storage has heartbeats (an interval)
                cast(BaseHeartbeat, self.storage).record_heartbeat(t._trial_id)


class PackLoop:
    def __init__(
        self,
        study: optuna.Study,
        objective: Objective,
        data: Dataset,
        slots: int,
        n_trials: int,
        timeout: float | None = None,
        callbacks: Sequence[StudyCallback] = (),
        before_ask: Callable[[], None] | None = None,
    ):
        self.study, self.objective, self.data = study, objective, data
        self.n_trials, self.callbacks, self.before_ask = n_trials, list(callbacks), before_ask
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.trainer = PackedTrainer(
            objective.spec.base,
            data,
            max(1, min(slots, n_trials)),
            topk="topk" in objective.spec.families,
        )
        self.live: dict[int, _Live] = {}
        self.asked = 0
        self.stopped: str | None = None  # why no more trials are asked, before n_trials

    def run(self) -> None:
        """Run until ``n_trials`` trials have ended (or the timeout stopped the asking)."""
        self.heartbeat = _Heartbeat(self.study, self.live)
        try:
            for slot in self.trainer.free():
                self._fill(slot)
            self.trainer.run(self._on_epoch)
        except BaseException as err:
            for slot in list(self.live):
                self._end(slot, TrialState.FAIL, f"{type(err).__name__}: {err}", refill=False)
            raise
        finally:
            self.heartbeat.stop.set()

    def _fill(self, slot: int) -> None:
        if (
            self.stopped
            or self.asked >= self.n_trials
            or (self.deadline and time.monotonic() > self.deadline)
        ):
            return
        if self.before_ask:
            self.before_ask()
        with warnings.catch_warnings():  # "Heartbeat ... used with Study.optimize": _Heartbeat
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = self.study.ask()
        self.heartbeat.beat(trial)
        self.asked += 1
        try:
            cfg, run = self.objective.begin(trial)
        except TrackingFailed as err:  # a trial without its run would be lost to tracking
            self.stopped = str(err)
            trial.set_user_attr(FAIL_REASON, self.stopped[:500])
            self._told(self.study.tell(trial, state=TrialState.FAIL), slot, refill=False)
            return
        history = History()
        self.live[slot] = _Live(
            trial, cfg, run, self.objective.epoch_hooks(trial, run, history), history
        )
        self.trainer.assign(slot, cfg)

    def _on_epoch(self, results) -> None:
        interrupt.check()  # a Ctrl-C that something swallowed
        # the final measures of every trial at its last epoch, in one pass over the pack
        finals = self.trainer.final_measures(results)
        for slot, (epoch, values) in results.items():
            live = self.live[slot]
            try:
                for hook in live.hooks:
                    hook(epoch, values)
                check_finite(epoch, values)
            except optuna.TrialPruned as pruned:
                self._end(slot, TrialState.PRUNED, str(pruned))
                continue
            except TrainingDiverged as err:
                self._end(slot, TrialState.FAIL, f"{type(err).__name__}: {err}")
                continue
            if slot in finals:
                self._complete(slot, finals[slot])

    def _complete(self, slot: int, final: dict[str, float]) -> None:
        live = self.live.pop(slot)
        result = measured(None, live.history, final, time.perf_counter() - live.start)
        # its weights only where its run records them: its model is built there (the file, the
        # pictures), while the pack trains on
        weights = self.trainer.weights(slot) if live.run is not None else None
        value = self.objective.complete(live.trial, live.cfg, live.run, result, weights)
        self._told(self.study.tell(live.trial, value), slot)

    def _end(self, slot: int, state: TrialState, reason: str, refill: bool = True) -> None:
        """A trial ends PRUNED or FAIL: its run says why, Optuna is told, the slot moves on."""
        live = self.live.pop(slot)
        self.objective.abort(live.run, state.name, reason)
        if state == TrialState.FAIL:
            live.trial.set_user_attr(FAIL_REASON, reason.splitlines()[0][:500])
        self._told(self.study.tell(live.trial, state=state), slot, refill)

    def _told(self, frozen: FrozenTrial, slot: int, refill: bool = True) -> None:
        self.trainer.release(slot)
        for callback in self.callbacks:
            callback(self.study, frozen)
        if refill:
            self._fill(slot)
