"""Fault drill: kill workers in the middle of trials and count what survives.

    python -m study faults [--workers 4] [--trials 25] [--cycles 10] [--epochs 1] [--dir DIR]
                           [--storage URL] [--tracking-uri URI]

Phase 1 runs ``python -m study run --workers W --n-trials W*T`` (tiny trials: 1 epoch on 400
digits of mnist-5k) and checks for W*T finished trials numbered 0..W*T-1, each with exactly one
child run that holds its whole record. Phase 2 resumes the study with W worker processes started
here and, C times, kills a random worker with SIGKILL while it is in a trial and starts it again.
Once all have ended it opens the study as its coordinator does at the end (runs of dead workers
ended, runs that lack their record repaired) and checks that the trials finished in phase 1 are
unchanged, in Optuna and in MLflow (metric histories, tags, artefact files), that every killed
trial is FAIL and was run again by another worker, that the workers finished their share, and
that no trial is left RUNNING or queued and no run RUNNING. It prints the counts and exits 1 when
a check fails.

The runs are checked for what they hold, not counted (study/fault_checks.py).

The stores are a new journal file and SQLite tracking store in --dir (default: a temporary folder,
removed afterwards), or the given --storage and --tracking-uri (a fresh study name each time).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from experiments.data import Dataset
from study import fault_checks
from study.commandline import parser, spec_from_args, worker_command
from study.fault_checks import FINISHED, Drill, check_records, snapshot
from study.recording import StudyTracking
from study.repair import repair
from study.storage import for_helpers, open_storage
from study.workers import (
    WORKER_ATTR,
    parse_worker,
    recover,
)
from tracking.runs import Tracker

FAMILIES = ("sparse_kl", "ncae")
PHASE_SECONDS = 1800  # a phase still running after this long has hung


def main(args: argparse.Namespace) -> int:
    for name in ("workers", "trials", "cycles", "epochs"):
        if getattr(args, name) < 1:
            print(f"error: --{name} must be >= 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    if args.dir:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
        drill = run(args, Path(args.dir))
    else:
        with tempfile.TemporaryDirectory(prefix="sae-faults-") as tmp:
            drill = run(args, Path(tmp))
    for problem in drill.problems:
        print(f"FAILED: {problem}")
    print(
        "faults: "
        + ("all checks passed" if not drill.problems else f"{len(drill.problems)} check(s) failed")
    )
    return 1 if drill.problems else 0


def run(args: argparse.Namespace, folder: Path) -> Drill:
    """Both phases in ``folder``; returns the counts and the failed checks."""
    storage = args.storage or f"journal:{folder / 'optuna-journal.log'}"
    uri = args.tracking_uri or f"sqlite:///{folder / 'mlflow.db'}"
    name = f"faults-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    drill = Drill(name)
    w, t = args.workers, args.trials
    study_args = parser().parse_args(
        [
            "run",
            "--family",
            *FAMILIES,
            "--data",
            f"npz:{_tiny_npz(folder)}",
            "--epochs",
            str(args.epochs),
            "--pruner",
            "none",
            "--seed",
            str(args.seed),
            "--storage",
            storage,
            "--tracking-uri",
            uri,
            "--set",
            "train.batch_size=64",
            "--confirm-seeds",
            "0",
        ]
    )

    def command(index: int, n_trials: int) -> list[str]:
        return worker_command(study_args, name, index, n_trials)

    env = os.environ | for_helpers(storage)[1]
    print(f"phase 1: study {name!r}, {w} workers x {t} trials", flush=True)
    code: int | str
    with open(folder / "phase1.log", "w") as log:
        try:
            code = subprocess.run(
                [*command(0, w * t), "--workers", str(w)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=PHASE_SECONDS,
            ).returncode
        except subprocess.TimeoutExpired:
            code = "nothing: it hung"
    if code != 0:
        drill.check(False, f"phase 1 exited {code}: {_last_line(folder / 'phase1.log')}")
        return drill
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    tracker = Tracker(name, uri)
    data = _data(study_args)
    fault_checks.phase1(drill, study, tracker, w * t)
    drill.phase1 |= check_records(drill, study.get_trials(), tracker, data, "phase 1")
    before = {x.number: (x.state, x.value) for x in study.get_trials() if x.state in FINISHED}
    runs_before = snapshot(tracker, [x for x in study.get_trials() if x.state in FINISHED])

    share = max(3, math.ceil(3 * args.cycles / w))  # enough trials to kill C times
    print(f"phase 2: {w} workers x {share} trials, {args.cycles} SIGKILLs mid-trial", flush=True)
    killed = _chaos(
        drill, study, command, env, folder, w, share, args.cycles, random.Random(args.seed)
    )
    track = StudyTracking.open(study, {}, uri)  # as a study's coordinator does at its end
    recover(study, track)
    repaired = repair(study, track, data)
    track.close()
    drill.phase2 |= {"repaired": len(repaired), "retrained": len(repaired.retrained)}
    print(
        f"  {len(repaired)} completed trials whose runs lacked their record repaired "
        f"({len(repaired.retrained)} trained again for their artefacts)",
        flush=True,
    )
    fault_checks.phase2(drill, study, tracker, before, killed, w * share)
    drill.phase2 |= check_records(drill, study.get_trials(), tracker, data, "phase 2")
    changed = [
        n
        for n, runs in snapshot(tracker, [study.trials[n] for n in runs_before]).items()
        if runs != runs_before[n]
    ]
    drill.phase2["phase1_runs_kept"] = len(runs_before) - len(changed)
    print(
        f"  {len(runs_before) - len(changed)} of {len(runs_before)} phase-1 runs unchanged in "
        f"MLflow",
        flush=True,
    )
    drill.check(not changed, f"phase 2 changed the runs of phase-1 trials {changed[:10]}")
    return drill


def _data(study_args: argparse.Namespace) -> Dataset:
    """The data the drill's workers train on, split as they split it."""
    from experiments import data as data_module

    base = spec_from_args(study_args).base
    return data_module.load(base.data.name, base.data.val_fraction, base.data.seed)


def _last_line(log: Path) -> str:
    """What a worker said last (its log is gone with a temporary --dir)."""
    lines = log.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "(no output)"


def _tiny_npz(folder: Path) -> Path:
    """400 training and 200 test digits of mnist-5k: trials of a second or two."""
    from experiments import data as data_module

    full = data_module.load("mnist-5k")
    x = np.concatenate([full.x_train, full.x_val])[:400]
    y = np.concatenate([full.y_train, full.y_val])[:400]
    to_uint8 = lambda a: np.round(a * 255).astype(np.uint8).reshape(-1, 28, 28)  # noqa: E731
    path = folder / "tiny.npz"
    np.savez(
        path,
        x_train=to_uint8(x),
        y_train=y,
        x_test=to_uint8(full.x_test[:200]),
        y_test=full.y_test[:200],
    )
    return path


class _Slot:
    """One worker of phase 2: its current process and every pid it has had."""

    def __init__(self, index: int, share: int):
        self.index, self.share = index, share
        self.pids: list[int] = []
        self.proc: subprocess.Popen | None = None

    def start(self, command, env, folder: Path, trials: list[FrozenTrial]) -> None:
        left = self.share - self.finished(trials)
        if left <= 0:
            self.proc = None
            return
        with open(folder / f"worker-{self.index}.log", "a") as log:
            self.proc = subprocess.Popen(
                command(self.index, left), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self.pids.append(self.proc.pid)

    def owns(self, trial: FrozenTrial, pid: int | None = None) -> bool:
        _, owner, _ = parse_worker(trial.user_attrs.get(WORKER_ATTR, ""))
        return owner in ([pid] if pid else self.pids)

    def finished(self, trials: list[FrozenTrial]) -> int:
        return sum(t.state in FINISHED and self.owns(t) for t in trials)


def _chaos(drill, study, command, env, folder, workers, share, cycles, rng) -> dict[int, int]:
    """Phase 2's kills; returns {number of the trial in flight: pid killed}."""
    slots = [_Slot(i + 1, share) for i in range(workers)]
    for slot in slots:
        slot.start(command, env, folder, study.get_trials(deepcopy=False))
    killed: dict[int, int] = {}
    kills = 0
    last = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
    newest = -1  # the highest trial number at the last kill
    deadline = time.monotonic() + PHASE_SECONDS
    while time.monotonic() < deadline:
        trials = study.get_trials(deepcopy=False)
        broken = [
            (s.index, s.proc.returncode) for s in slots if s.proc and s.proc.poll() not in (None, 0)
        ]
        if broken:
            index, code = broken[0]
            drill.check(
                False,
                f"phase 2: worker {index} exited {code}: "
                f"{_last_line(folder / f'worker-{index}.log')}",
            )
            break
        if kills == cycles or all(s.proc is None or s.proc.poll() == 0 for s in slots):
            break
        done = sum(t.state in FINISHED for t in trials)
        # kill only after the study has moved on since the last kill (a trial finished, or one
        # begun since: a worker's pack finishes its trials together, so the last worker left
        # finishes nothing until its work is done), and only a worker that is inside a trial
        # (its run exists: the model is training or being recorded)
        busy = [
            (s, t)
            for s in slots
            if s.proc and s.proc.poll() is None
            for t in trials
            if t.state == TrialState.RUNNING
            and s.owns(t, s.proc.pid)
            and "mlflow_run_id" in t.user_attrs
        ]
        if not busy or (done == last and all(t.number <= newest for _, t in busy)):
            time.sleep(0.2)  # workers move on by themselves: poll the storage
            continue
        slot, trial = rng.choice(busy)
        slot.proc.send_signal(signal.SIGKILL)
        slot.proc.wait()
        state = study.get_trials(deepcopy=False)[trial.number].state
        if state not in FINISHED:  # it did die mid-trial (or finished a breath before)
            kills += 1
            killed[trial.number] = slot.proc.pid
            print(
                f"  kill {kills}: worker {slot.index} (pid {slot.proc.pid}) in trial "
                f"{trial.number}",
                flush=True,
            )
        last, newest = done, max(t.number for t in trials)
        slot.start(command, env, folder, study.get_trials(deepcopy=False))
    drill.check(
        kills == cycles,
        f"phase 2: {kills} of {cycles} kills mid-trial before the workers ran out of trials",
    )
    for slot in slots:
        if slot.proc is not None:
            try:
                slot.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                slot.proc.kill()
                drill.check(False, f"phase 2: worker {slot.index} hung")
            drill.check(
                slot.proc.returncode in (0, -signal.SIGKILL),
                f"phase 2: worker {slot.index} exited {slot.proc.returncode}",
            )
    drill.phase2["finished_by_workers"] = sum(s.finished(study.get_trials()) for s in slots)
    return killed
