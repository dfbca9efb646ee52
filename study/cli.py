"""Command line of the hyperparameter study.

    python -m study run [--family sparse_kl ncae topk] [--target 0.05 | --target-l0 4]
                        [--n-trials 60] [--timeout S]
                        [--epochs 50] [--data mnist-5k] [--pruner hyperband] [--seed 0]
                        [--study-name NAME] [--storage URL] [--set key=value ...]
                        [--pack K] [--workers N]
    python -m study report [--study-name NAME] [--storage URL] [--out DIR]
    python -m study bench [--epochs 20] [--trials 16] [--packs 1 4 8 16]
    python -m study faults [--workers 4] [--trials 25] [--cycles 10]    # see study/faults.py

Searches the sparse autoencoders' hyperparameters (ranges: study/space.py) for the lowest
validation reconstruction MSE with a validation mean code activation at most --target. Running the
same command again resumes the study by name. Bad input prints one line and exits 2 before any
store is touched. ``report`` writes what a study found to reports/<study>/ (study/report/).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings

from experiments.config import ConfigError
from experiments.data import DataError
from study.commandline import (
    check_study_name,
    chosen_target,
    helper_commands,
    parser,
    spec_from_args,
)
from study.report import console
from study.results import StudySpec
from study.storage import StorageError, for_helpers
from tracking.store import TrackingError, TrackingFailed, check_store, tracking_uri


def _summary(outcome, spec: StudySpec, seconds: float, data) -> None:
    counts = outcome.counts()
    print(
        f"\nstudy {spec.name!r}: {len(outcome.trials)} trials in total "
        f"({counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed, "
        f"{counts['feasible']} feasible: {spec.constraint.describe()}); this run took "
        f"{seconds:.0f} s"
    )
    if outcome.reconciled:
        print(
            f"  {outcome.reconciled} trial(s) of a stopped worker were failed (and queued "
            f"again) and their runs ended"
        )
    if outcome.repaired:
        print(
            f"  {len(outcome.repaired)} completed trial(s) whose runs lacked their record were "
            f"repaired ({len(outcome.repaired.retrained)} trained again for their artefacts)"
        )
    families = list(spec.families)
    print("\n".join(console.search_lines(outcome.trials, families, spec.constraint)))
    if outcome.confirmation is not None:
        track = outcome.tracking
        _confirmed(
            outcome.confirmation,
            spec,
            data,
            track.tracker if track else None,
            track.guarded if track else None,
        )
    else:
        print(
            "not confirmed on fresh seeds (--confirm-seeds 0): the numbers above are one "
            "seed's, the best of many draws"
        )


def _confirmed(outcome, spec: StudySpec, data, tracker, guard=None) -> None:
    from study import baselines

    refs = baselines.references(data, spec.base.model.latent, spec.base.data.seed)
    print(
        "\n".join(console.confirmation_lines(outcome, list(spec.families), spec.constraint, refs))
    )

    def where(run_id: str) -> str | None:
        def read() -> str:
            return tracker.client.get_run(run_id).info.artifact_uri

        return guard("reading the winner's run", read, None) if guard else read()

    print("\n".join(console.winner_lines(outcome, where if tracker else None)))


def _confirm(args: argparse.Namespace) -> int:
    """``python -m study confirm``: confirm an existing study's winners (for its own target or
    another) and train its baselines."""
    from experiments import data as data_module
    from experiments.packed import use_compile_cache
    from experiments.slots import default_slots
    from study import confirm as confirming
    from study.report import ReportError
    from study.report.write import load_study, open_tracking
    from study.results import stored_spec

    try:
        if args.confirm_top < 1 or args.confirm_seeds < 1:
            raise ConfigError("--confirm-top and --confirm-seeds must be >= 1")
        if args.pack is not None and args.pack < 1:
            raise ConfigError(f"--pack must be >= 1, got {args.pack}")
        check_study_name(args.study_name)
        study = load_study(args.storage, args.study_name)
        spec = stored_spec(study, chosen_target(args))
        data = data_module.load(
            spec.base.data.name, spec.base.data.val_fraction, spec.base.data.seed
        )
        recorder = open_tracking(study, args.tracking_uri, data)
    except (ConfigError, DataError, StorageError, ReportError, TrackingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    use_compile_cache()
    outcome = confirming.confirm(
        study,
        spec.base,
        data,
        list(spec.families),
        spec.constraint,
        args.confirm_top,
        args.confirm_seeds,
        args.pack or default_slots(),
        recorder,
    )
    _confirmed(outcome, spec, data, recorder.tracker if recorder else None)
    return 0


def _report(args: argparse.Namespace) -> int:
    from study.report import ReportError, write
    from tracking.artifacts import PROGRESS_BAR

    os.environ[PROGRESS_BAR] = "false"  # this process downloads runs' figures quietly
    try:
        check_study_name(args.study_name)
        written = write.write(
            args.storage, args.study_name, args.out, args.tracking_uri, chosen_target(args)
        )
    except (ConfigError, DataError, StorageError, ReportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"report: {written.folder / 'report.html'} (and report.md, summary.json, trials.csv"
        f"{', best_config.json' if written.best else ''})"
    )
    if written.logged_to:
        print(f"logged to the study's MLflow run {written.logged_to} under report/")
    if written.to_confirm:
        print(f"not everything is confirmed on fresh seeds; to confirm it:\n  {written.to_confirm}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import optuna  # after parsing: --help and bad arguments answer without loading more

    # our own progress lines replace Optuna's per-trial log; TPE's "group" option and the
    # retry callback are experimental in name only (stable since Optuna 2.8)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if args.command == "report":
        return _report(args)
    if args.command == "bench":
        from study import bench

        return bench.main(args)
    if args.command == "faults":
        from study import faults

        return faults.main(args)
    if args.command == "confirm":
        return _confirm(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """``python -m study run``: the study, its helper workers, then the summary."""
    from study import interrupt

    with interrupt.remembered():
        return _run_study(args)


def _run_study(args: argparse.Namespace) -> int:
    try:
        spec = spec_from_args(args)
    except (ConfigError, StorageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from experiments import data as data_module
    from experiments import memory
    from experiments.packed import use_compile_cache
    from experiments.slots import default_slots
    from study.search import StudyError, run_study

    use_compile_cache()  # before anything compiles

    try:
        data = data_module.load(
            spec.base.data.name, spec.base.data.val_fraction, spec.base.data.seed
        )
        if args.worker_index == 0:  # helpers: their coordinator checked for them
            slots = min(args.pack or default_slots(), args.n_trials)  # every worker's pack
            memory.check(spec.base, data.sizes(), slots, min(args.workers, args.n_trials))
            if not args.no_tracking:
                check_store(tracking_uri(args.tracking_uri))
        start = time.perf_counter()
        commands = helper_commands(args, spec.name)
        env = os.environ | for_helpers(args.storage)[1]
        own = args.n_trials - sum(int(c[c.index("--n-trials") + 1]) for c in commands)
        outcome = run_study(
            spec,
            data,
            args.storage,
            own,
            args.timeout,
            args.tracking_uri,
            tracking=not args.no_tracking,
            progress=args.worker_index == 0,
            worker=args.worker_index,
            pack=args.pack,
            confirm_top=args.confirm_top,
            confirm_seeds=args.confirm_seeds,
            helpers=lambda: [subprocess.Popen(c, env=env) for c in commands],
        )
    except (ConfigError, DataError, StorageError, StudyError, TrackingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrackingFailed as err:
        print(f"error: tracking store: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "\ninterrupted: the study is saved; run the same command to resume it", file=sys.stderr
        )
        return 130
    if args.worker_index == 0:
        _summary(outcome, spec, time.perf_counter() - start, data)
    failed = outcome.tracking.failures() if outcome.tracking else ""
    if failed:
        print(
            f"error: {failed}. The study is saved; run the same command to go on (runs left "
            f"unrecorded are repaired then)",
            file=sys.stderr,
        )
        return 1
    if outcome.helpers_failed:
        print(
            f"error: {outcome.helpers_failed} worker process(es) failed; their output is "
            f"above. Run the same command to go on with the study",
            file=sys.stderr,
        )
        return 1
    return 0
