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
store is touched. ``report`` writes what a study found to reports/<study>/ (study/report.py).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import time
import warnings

import optuna

from experiments import memory
from experiments.cli import OneLineParser
from experiments.config import ConfigError, parse_override
from experiments.data import SOURCES, DataError
from experiments.packed import default_slots
from experiments.presets import DEFAULT
from study import confirm, faults, summary
from study.objective import StudySpec
from study.results import DEFAULT_MEASURE, DEFAULT_TARGET
from study.runner import PRUNERS, StudyError, run_study
from study.space import DEFAULT_FAMILIES, SEARCHED_FAMILIES, SEARCHED_KEYS, check_families
from study.storage import DEFAULT_STORAGE, StorageError, check_url, check_workers, for_helpers
from tracking.runs import TrackingError, TrackingFailed, check_store, tracking_uri


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m study", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    run = sub.add_parser("run", help="create or resume a study and run trials")
    run.add_argument("--family", nargs="+", default=list(DEFAULT_FAMILIES),
                     help=f"families to search, of {', '.join(SEARCHED_FAMILIES)} (default: "
                          f"{' '.join(DEFAULT_FAMILIES)})")
    _add_targets(run, default=True)
    run.add_argument("--n-trials", type=int, default=60, help="trials to run now (default 60)")
    run.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    run.add_argument("--epochs", type=int, default=DEFAULT.train.epochs,
                     help="epochs per trial: the budget, fixed per study")
    run.add_argument("--data", default=DEFAULT.data.name, help=f"dataset: {', '.join(SOURCES)}")
    run.add_argument("--pruner", default="hyperband", help=f"one of {', '.join(PRUNERS)}")
    run.add_argument("--seed", type=int, default=0, help="sampler, weights and split seed")
    run.add_argument("--study-name", help="default: derived from families, data, target, "
                                          "epochs; an empty name is refused, not the default")
    run.add_argument("--storage", default=DEFAULT_STORAGE,
                     help=f"journal:PATH or a database URL (default {DEFAULT_STORAGE})")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="fixed config value for every trial, e.g. model.activation=sigmoid")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI "
                                            "or sqlite:///mlflow.db)")
    run.add_argument("--no-tracking", action="store_true", help="run without MLflow")
    run.add_argument("--workers", type=int, default=1,
                     help="worker processes sharing the study's storage (default 1)")
    run.add_argument("--pack", type=int,
                     help="trials trained at once as one model (default: 8 on a CPU, 256 on a "
                          "GPU with JAX; 1 trains one trial after another)")
    run.add_argument("--confirm-top", type=int, default=confirm.TOP,
                     help=f"after the search, train the best N feasible configurations of each "
                          f"family again on fresh seeds (default {confirm.TOP}; 0 skips)")
    run.add_argument("--confirm-seeds", type=int, default=confirm.SEEDS,
                     help=f"fresh seeds per confirmed configuration and baseline (default "
                          f"{confirm.SEEDS}; 0 skips)")
    run.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)  # helpers
    conf = sub.add_parser("confirm", help="train a study's best configurations (for its target "
                                          "or another) and its baselines on fresh seeds")
    _add_study(conf)
    _add_targets(conf, default=False)
    conf.add_argument("--confirm-top", type=int, default=confirm.TOP,
                      help=f"configurations per family (default {confirm.TOP})")
    conf.add_argument("--confirm-seeds", type=int, default=confirm.SEEDS,
                      help=f"fresh seeds each (default {confirm.SEEDS})")
    conf.add_argument("--pack", type=int, help="trainings at once (default as for run)")
    bench = sub.add_parser("bench", help="measure training, packing and tracking speed "
                                         "(bench/results.json)")
    from study.bench import add_arguments

    add_arguments(bench)
    report = sub.add_parser("report", help="write a study's report to reports/<study>/")
    _add_study(report)
    _add_targets(report, default=False)
    report.add_argument("--out", help="report folder (default reports/<study>)")
    faults.add_arguments(sub.add_parser(
        "faults", help="kill workers mid-trial, restart them, check that nothing was lost"))
    return parser


def _add_study(parser: argparse.ArgumentParser) -> None:
    """The options that find an existing study and its runs."""
    parser.add_argument("--study-name", help="default: the study whose latest trial started "
                                             "last; an empty name is refused")
    parser.add_argument("--storage", default=DEFAULT_STORAGE,
                        help=f"the study's storage (default {DEFAULT_STORAGE})")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI the study used (default: "
                                               "$MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")


def _add_targets(parser: argparse.ArgumentParser, default: bool) -> None:
    """--target, --target-l0, --target-raw: one of them bounds one sparsity measure."""
    which = parser.add_mutually_exclusive_group()
    own = "the study's own" if not default else None
    which.add_argument("--target", type=float,
                       help=f"largest validation mean activation, each unit weighted by its "
                            f"decoder column's RMS (default {own or DEFAULT_TARGET})")
    which.add_argument("--target-l0", type=float, metavar="K",
                       help="largest mean number of active code units per validation digit")
    which.add_argument("--target-raw", type=float, metavar="X",
                       help="largest unweighted validation mean activation, as the notebooks "
                            "measured it (a code can meet it by shrinking against its decoder)")


def chosen_target(args: argparse.Namespace) -> tuple[str, float] | None:
    """(measure, target) from the --target options, or None when none was given."""
    for option, measure in (("target", "mean_activation"), ("target_l0", "l0"),
                            ("target_raw", "raw_activation")):
        value = getattr(args, option)
        if value is not None:
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"--{option.replace('_', '-')} must be > 0 and finite, "
                                  f"got {value!r}")
            return measure, value
    return None


def worker_command(args: argparse.Namespace, name: str, index: int, n_trials: int) -> list[str]:
    """The command of helper process ``index`` (> 0) running ``n_trials`` of study ``name``;
    an inline storage password is left out of it (see ``for_helpers``)."""
    storage, _ = for_helpers(args.storage)
    measure, target = chosen_target(args) or (DEFAULT_MEASURE, DEFAULT_TARGET)
    option = {"mean_activation": "--target", "l0": "--target-l0",
              "raw_activation": "--target-raw"}[measure]
    common = ["--family", *args.family, option, repr(target), "--epochs",
              str(args.epochs), "--data", args.data, "--pruner", args.pruner, "--seed",
              str(args.seed), "--study-name", name, "--storage", storage]
    common += [x for s in args.set for x in ("--set", s)]
    common += ["--timeout", repr(args.timeout)] if args.timeout else []
    common += ["--pack", str(args.pack)] if args.pack else []
    common += ["--tracking-uri", args.tracking_uri] if args.tracking_uri else []
    common += ["--no-tracking"] if args.no_tracking else []
    common += ["--confirm-top", str(args.confirm_top), "--confirm-seeds", str(args.confirm_seeds)]
    return [sys.executable, "-m", "study", "run", *common, "--n-trials", str(n_trials),
            "--worker-index", str(index)]


def helper_commands(args: argparse.Namespace, name: str) -> list[list[str]]:
    """The commands of the ``--workers`` - 1 helper processes, splitting --n-trials between
    all."""
    shares = [args.n_trials // args.workers + (i < args.n_trials % args.workers)
              for i in range(args.workers)]
    return [worker_command(args, name, i, n) for i, n in enumerate(shares) if i > 0 and n > 0]


def default_name(families, data: str, measure: str, target: float, epochs: int) -> str:
    data = re.sub(r"[^A-Za-z0-9._-]+", "_", data.split("/")[-1])
    kind = {"mean_activation": "", "l0": "-l0", "raw_activation": "-raw"}[measure]
    return f"{'+'.join(families)}-{data}-target{kind}{target:g}-{epochs}ep"


def check_study_name(name: str | None) -> None:
    """Refuse an empty study name (it would fall back to another study) and one with a character
    that is not printable (a newline, a control character): it names the Optuna study, the MLflow
    experiment and the report's folder. None (no --study-name) is the default's to decide."""
    if name is None:
        return
    if not name.strip():
        raise ConfigError("--study-name must not be empty; leave it out for the default name")
    odd = next((c for c in name if not c.isprintable()), None)
    if odd is not None:
        raise ConfigError(f"--study-name {name!r} holds the non-printable character {odd!r}; "
                          f"use printable characters only")


def spec_from_args(args: argparse.Namespace) -> StudySpec:
    """Validate every argument; raises ConfigError or StorageError."""
    unknown = [f for f in args.family if f not in SEARCHED_FAMILIES]
    if unknown:
        raise ConfigError(f"unknown family {unknown[0]!r}; searchable: "
                          f"{', '.join(SEARCHED_FAMILIES)}")
    families = tuple(dict.fromkeys(args.family))
    if args.pruner not in PRUNERS:
        raise ConfigError(f"unknown pruner {args.pruner!r}; one of {', '.join(PRUNERS)}")
    measure, target = chosen_target(args) or (DEFAULT_MEASURE, DEFAULT_TARGET)
    if args.n_trials < 1:
        raise ConfigError(f"--n-trials must be >= 1, got {args.n_trials}")
    if args.pack is not None and args.pack < 1:
        raise ConfigError(f"--pack must be >= 1, got {args.pack}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.confirm_top < 0 or args.confirm_seeds < 0:
        raise ConfigError("--confirm-top and --confirm-seeds must be >= 0")
    if args.timeout is not None and not args.timeout > 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {args.timeout!r}")
    check_url(args.storage)
    check_workers(args.storage, args.workers)
    fixed = dict(parse_override(s) for s in args.set)
    clash = sorted(set(SEARCHED_KEYS) & set(fixed))
    if clash:
        raise ConfigError(f"{clash[0]} is searched by the study; it cannot be fixed with --set")
    base = DEFAULT.replace(**{"name": "study", "data.name": args.data, "data.seed": args.seed,
                              "train.epochs": args.epochs, "train.seed": args.seed, **fixed})
    check_families(base, families)
    check_study_name(args.study_name)
    name = args.study_name or default_name(families, args.data, measure, target, args.epochs)
    return StudySpec(name=name, families=families, target=target, base=base,
                     pruner=args.pruner, measure=measure)


def _summary(outcome, spec: StudySpec, seconds: float, data) -> None:
    counts = outcome.counts()
    print(f"\nstudy {spec.name!r}: {len(outcome.trials)} trials in total "
          f"({counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed, "
          f"{counts['feasible']} feasible: {spec.constraint.describe()}); this run took "
          f"{seconds:.0f} s")
    if outcome.reconciled:
        print(f"  {outcome.reconciled} trial(s) of a stopped worker were failed (and queued "
              f"again) and their runs ended")
    if outcome.repaired:
        print(f"  {len(outcome.repaired)} completed trial(s) whose runs lacked their record were "
              f"repaired ({len(outcome.repaired.retrained)} trained again for their artefacts)")
    families = list(spec.families)
    print("\n".join(summary.search_lines(outcome.trials, families, spec.constraint)))
    if outcome.confirmation is not None:
        track = outcome.tracking
        _confirmed(outcome.confirmation, spec, data, track.tracker if track else None,
                   track.guarded if track else None)
    else:
        print("not confirmed on fresh seeds (--confirm-seeds 0): the numbers above are one "
              "seed's, the best of many draws")


def _confirmed(outcome, spec: StudySpec, data, tracker, guard=None) -> None:
    from study import baselines

    refs = baselines.references(data, spec.base.model.latent, spec.base.data.seed)
    print("\n".join(summary.confirmation_lines(outcome, list(spec.families), spec.constraint,
                                               refs)))

    def where(run_id: str) -> str | None:
        def read() -> str:
            return tracker.client.get_run(run_id).info.artifact_uri
        return guard("reading the winner's run", read, None) if guard else read()
    print("\n".join(summary.winner_lines(outcome, where if tracker else None)))


def _confirm(args: argparse.Namespace) -> int:
    """``python -m study confirm``: confirm an existing study's winners (for its own target or
    another) and train its baselines."""
    from experiments import data as data_module
    from study import confirm as confirming
    from study.report import ReportError, load_study, open_tracking
    from study.runner import stored_spec

    try:
        if args.confirm_top < 1 or args.confirm_seeds < 1:
            raise ConfigError("--confirm-top and --confirm-seeds must be >= 1")
        if args.pack is not None and args.pack < 1:
            raise ConfigError(f"--pack must be >= 1, got {args.pack}")
        check_study_name(args.study_name)
        study = load_study(args.storage, args.study_name)
        spec = stored_spec(study, chosen_target(args))
        data = data_module.load(spec.base.data.name, spec.base.data.val_fraction,
                                spec.base.data.seed)
        recorder = open_tracking(study, args.tracking_uri, data)
    except (ConfigError, DataError, StorageError, ReportError, TrackingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    outcome = confirming.confirm(study, spec.base, data, list(spec.families), spec.constraint,
                                 args.confirm_top, args.confirm_seeds,
                                 args.pack or default_slots(), recorder)
    _confirmed(outcome, spec, data, recorder.tracker if recorder else None)
    return 0


def _report(args: argparse.Namespace) -> int:
    from study import report

    try:
        check_study_name(args.study_name)
        written = report.write(args.storage, args.study_name, args.out, args.tracking_uri,
                               chosen_target(args))
    except (ConfigError, DataError, StorageError, report.ReportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {written.folder / 'report.html'} (and report.md, summary.json, trials.csv"
          f"{', best_config.json' if written.best else ''})")
    if written.logged_to:
        print(f"logged to the study's MLflow run {written.logged_to} under report/")
    if written.to_confirm:
        print(f"not everything is confirmed on fresh seeds; to confirm it:\n  "
              f"{written.to_confirm}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
        return faults.main(args)
    if args.command == "confirm":
        return _confirm(args)
    try:
        spec = spec_from_args(args)
        from experiments import data as data_module

        data = data_module.load(spec.base.data.name, spec.base.data.val_fraction,
                                spec.base.data.seed)
        if args.worker_index == 0:  # helpers: their coordinator checked for them
            slots = min(args.pack or default_slots(), args.n_trials)  # every worker's pack
            memory.check(spec.base, data.sizes(), slots, min(args.workers, args.n_trials))
            if not args.no_tracking:
                check_store(tracking_uri(args.tracking_uri))
        start = time.perf_counter()
        commands = helper_commands(args, spec.name)
        env = os.environ | for_helpers(args.storage)[1]
        own = args.n_trials - sum(int(c[c.index("--n-trials") + 1]) for c in commands)
        outcome = run_study(spec, data, args.storage, own, args.timeout, args.tracking_uri,
                            tracking=not args.no_tracking, progress=args.worker_index == 0,
                            worker=args.worker_index, pack=args.pack,
                            confirm_top=args.confirm_top, confirm_seeds=args.confirm_seeds,
                            helpers=lambda: [subprocess.Popen(c, env=env) for c in commands])
    except (ConfigError, DataError, StorageError, StudyError, TrackingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrackingFailed as err:
        print(f"error: tracking store: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the study is saved; run the same command to resume it",
              file=sys.stderr)
        return 130
    if args.worker_index == 0:
        _summary(outcome, spec, time.perf_counter() - start, data)
    failed = outcome.tracking.failures() if outcome.tracking else ""
    if failed:
        print(f"error: {failed}. The study is saved; run the same command to go on (runs left "
              f"unrecorded are repaired then)", file=sys.stderr)
        return 1
    if outcome.helpers_failed:
        print(f"error: {outcome.helpers_failed} worker process(es) failed; their output is "
              f"above. Run the same command to go on with the study", file=sys.stderr)
        return 1
    return 0
