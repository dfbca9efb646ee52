"""The command line's arguments: the parser of ``python -m study`` and what turns its arguments
into a study (``spec_from_args``) and into the commands of helper workers. Light: it loads
neither Keras nor MLflow, so ``--help`` and bad input answer at once; ``study.cli`` runs the
commands."""

from __future__ import annotations

import argparse
import math
import re
import sys

from experiments.cli import OneLineParser
from experiments.config import ConfigError, parse_override
from experiments.data import SOURCES
from experiments.presets import DEFAULT
from study.results import DEFAULT_MEASURE, DEFAULT_TARGET, ROUNDS, SEEDS, TOP, StudySpec
from study.space import DEFAULT_FAMILIES, PRUNERS, SEARCHED_FAMILIES, SEARCHED_KEYS, check_families
from study.storage import DEFAULT_STORAGE, check_url, check_workers, for_helpers

# the default budget on the full 60,000-image sets (48,000 trained on): 20 epochs are 3,750 steps
# of 256 images, 6x as many as 50 epochs of mnist-5k's 3,200; Hyperband's rungs at 2, 6, 18
FULL_SIZE, FULL_SIZE_EPOCHS = ("mnist", "fashion-mnist"), 20


def parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m study",
        description="Hyperparameter studies of "
        "sparse autoencoders: search, confirm, report, bench, fault drill.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    run = sub.add_parser("run", help="create or resume a study and run trials")
    run.add_argument(
        "--family",
        nargs="+",
        default=list(DEFAULT_FAMILIES),
        help=f"families to search, of {', '.join(SEARCHED_FAMILIES)} (default: "
        f"{' '.join(DEFAULT_FAMILIES)})",
    )
    _add_targets(run, default=True)
    run.add_argument("--n-trials", type=int, default=60, help="trials to run now (default 60)")
    run.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    run.add_argument(
        "--epochs",
        type=int,
        help=f"epochs per trial: the budget, fixed per study (default "
        f"{DEFAULT.train.epochs}; {FULL_SIZE_EPOCHS} on the 60,000-image "
        f"{' and '.join(FULL_SIZE)})",
    )
    run.add_argument("--data", default=DEFAULT.data.name, help=f"dataset: {', '.join(SOURCES)}")
    run.add_argument("--pruner", default="hyperband", help=f"one of {', '.join(PRUNERS)}")
    run.add_argument("--seed", type=int, default=0, help="sampler, weights and split seed")
    run.add_argument(
        "--study-name",
        help="default: derived from families, data, target, "
        "epochs; an empty name is refused, not the default",
    )
    run.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help=f"journal:PATH or a database URL (default {DEFAULT_STORAGE})",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fixed config value for every trial, e.g. model.activation=sigmoid",
    )
    run.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
    run.add_argument("--no-tracking", action="store_true", help="run without MLflow")
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the study's storage (default 1)",
    )
    run.add_argument(
        "--pack",
        type=int,
        help="trials trained at once as one model (default: 8 on a CPU, 256 on a "
        "GPU with JAX; 1 trains one trial after another)",
    )
    run.add_argument(
        "--confirm-top",
        type=int,
        default=TOP,
        help=f"after the search, train the best N feasible configurations of each "
        f"family again on fresh seeds, the next N while none meets the target on every seed, "
        f"{ROUNDS} rounds at most (default {TOP}; 0 skips)",
    )
    run.add_argument(
        "--confirm-seeds",
        type=int,
        default=SEEDS,
        help=f"fresh seeds per confirmed configuration and baseline (default {SEEDS}; 0 skips)",
    )
    run.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)  # helpers
    conf = sub.add_parser(
        "confirm",
        help="train a study's best configurations (for its target "
        "or another) and its baselines on fresh seeds",
    )
    _add_study(conf)
    _add_targets(conf, default=False)
    conf.add_argument(
        "--confirm-top",
        type=int,
        default=TOP,
        help=f"configurations per family and round (default {TOP}; {ROUNDS} rounds at most)",
    )
    conf.add_argument(
        "--confirm-seeds", type=int, default=SEEDS, help=f"fresh seeds each (default {SEEDS})"
    )
    conf.add_argument("--pack", type=int, help="trainings at once (default as for run)")
    bench = sub.add_parser(
        "bench", help="measure training, packing and tracking speed (bench/results.json)"
    )
    from study.bench import add_arguments

    add_arguments(bench)
    report = sub.add_parser("report", help="write a study's report to reports/<study>/")
    _add_study(report)
    _add_targets(report, default=False)
    report.add_argument("--out", help="report folder (default reports/<study>)")
    _add_faults(
        sub.add_parser(
            "faults", help="kill workers mid-trial, restart them, check that nothing was lost"
        )
    )
    return parser


def _add_study(parser: argparse.ArgumentParser) -> None:
    """The options that find an existing study and its runs."""
    parser.add_argument(
        "--study-name",
        help="default: the study whose latest trial started last; an empty name is refused",
    )
    parser.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help=f"the study's storage (default {DEFAULT_STORAGE})",
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI the study used (default: "
        "$MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )


def _add_targets(parser: argparse.ArgumentParser, default: bool) -> None:
    """--target, --target-l0, --target-raw: one of them bounds one sparsity measure."""
    which = parser.add_mutually_exclusive_group()
    own = "the study's own" if not default else None
    which.add_argument(
        "--target",
        type=float,
        help=f"largest validation mean activation, each unit weighted by its "
        f"decoder column's RMS (default {own or DEFAULT_TARGET})",
    )
    which.add_argument(
        "--target-l0",
        type=float,
        metavar="K",
        help="largest mean number of active code units per validation digit",
    )
    which.add_argument(
        "--target-raw",
        type=float,
        metavar="X",
        help="largest unweighted validation mean activation, as the notebooks "
        "measured it (a code can meet it by shrinking against its decoder)",
    )


def chosen_target(args: argparse.Namespace) -> tuple[str, float] | None:
    """(measure, target) from the --target options, or None when none was given."""
    for option, measure in (
        ("target", "mean_activation"),
        ("target_l0", "l0"),
        ("target_raw", "raw_activation"),
    ):
        value = getattr(args, option)
        if value is not None:
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"--{option.replace('_', '-')} must be > 0 and finite, got {value!r}"
                )
            return measure, value
    return None


def epochs_of(args: argparse.Namespace) -> int:
    """Epochs per trial: ``--epochs``, else the default budget for ``--data``."""
    if args.epochs is not None:
        return args.epochs
    return FULL_SIZE_EPOCHS if args.data in FULL_SIZE else DEFAULT.train.epochs


def worker_command(args: argparse.Namespace, name: str, index: int, n_trials: int) -> list[str]:
    """The command of helper process ``index`` (> 0) running ``n_trials`` of study ``name``;
    an inline storage password is left out of it (see ``for_helpers``)."""
    storage, _ = for_helpers(args.storage)
    measure, target = chosen_target(args) or (DEFAULT_MEASURE, DEFAULT_TARGET)
    option = {"mean_activation": "--target", "l0": "--target-l0", "raw_activation": "--target-raw"}[
        measure
    ]
    common = [
        "--family",
        *args.family,
        option,
        repr(target),
        "--epochs",
        str(epochs_of(args)),
        "--data",
        args.data,
        "--pruner",
        args.pruner,
        "--seed",
        str(args.seed),
        "--study-name",
        name,
        "--storage",
        storage,
    ]
    common += [x for s in args.set for x in ("--set", s)]
    common += ["--timeout", repr(args.timeout)] if args.timeout else []
    common += ["--pack", str(args.pack)] if args.pack else []
    common += ["--tracking-uri", args.tracking_uri] if args.tracking_uri else []
    common += ["--no-tracking"] if args.no_tracking else []
    common += ["--confirm-top", str(args.confirm_top), "--confirm-seeds", str(args.confirm_seeds)]
    return [
        sys.executable,
        "-m",
        "study",
        "run",
        *common,
        "--n-trials",
        str(n_trials),
        "--worker-index",
        str(index),
    ]


def helper_commands(args: argparse.Namespace, name: str) -> list[list[str]]:
    """The commands of the ``--workers`` - 1 helper processes, splitting --n-trials between
    all."""
    shares = [
        args.n_trials // args.workers + (i < args.n_trials % args.workers)
        for i in range(args.workers)
    ]
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
        raise ConfigError(
            f"--study-name {name!r} holds the non-printable character {odd!r}; "
            f"use printable characters only"
        )


def spec_from_args(args: argparse.Namespace) -> StudySpec:
    """Validate every argument; raises ConfigError or StorageError."""
    unknown = [f for f in args.family if f not in SEARCHED_FAMILIES]
    if unknown:
        raise ConfigError(
            f"unknown family {unknown[0]!r}; searchable: {', '.join(SEARCHED_FAMILIES)}"
        )
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
    epochs = epochs_of(args)
    base = DEFAULT.replace(
        **{
            "name": "study",
            "data.name": args.data,
            "data.seed": args.seed,
            "train.epochs": epochs,
            "train.seed": args.seed,
            **fixed,
        }
    )
    check_families(base, families)
    check_study_name(args.study_name)
    name = args.study_name or default_name(families, args.data, measure, target, epochs)
    return StudySpec(
        name=name, families=families, target=target, base=base, pruner=args.pruner, measure=measure
    )


def _add_faults(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument(
        "--trials", type=int, default=25, help="trials per worker in phase 1 (default 25)"
    )
    parser.add_argument(
        "--cycles",
        type=int,
        default=10,
        help="workers killed mid-trial and restarted in phase 2 (default 10)",
    )
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trial (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="study seed and victim choice")
    parser.add_argument(
        "--dir",
        help="where the data, logs and default stores go "
        "(default: a temporary folder, removed afterwards)",
    )
    parser.add_argument("--storage", help="Optuna storage (default: a journal file in --dir)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite in --dir)")
