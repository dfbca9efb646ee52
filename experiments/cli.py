"""Command line of the notebooks' experiments.

    python -m experiments list
    python -m experiments run NAME [NAME ...] [--data D] [--epochs N] [--set key=value ...]
    python -m experiments run --all
    python -m experiments run --config runs/config.json      # repeat any recorded run

Each experiment becomes one MLflow run (experiment "notebooks" by default) in the store
given by --tracking-uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db. Bad input (unknown name,
key or dataset, wrong type, value out of range, a model too large for the memory available, a
tracking server that does not answer) prints one line and exits 2 before anything is written to
the store. A run whose training diverges is stored as FAILED with the reason; the others still
run, and the exit code is 2.
"""

from __future__ import annotations

import argparse
import sys

from experiments import presets
from experiments.config import ConfigError, ExperimentConfig, load_json, parse_override
from experiments.data import SOURCES, DataError

EXPERIMENT = "notebooks"


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage errors also exit 2, in one line
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m experiments", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    sub.add_parser("list", help="list the named experiments and their settings")
    run = sub.add_parser("run", help="run experiments as tracked MLflow runs")
    run.add_argument(
        "names", nargs="*", metavar="NAME", help=f"one of: {', '.join(presets.PRESETS)}"
    )
    run.add_argument(
        "--all", action="store_true", help="run the notebooks' experiments (every name but topk)"
    )
    run.add_argument("--config", help="a flat config JSON saved by an earlier run or report")
    run.add_argument("--data", help=f"dataset: {', '.join(SOURCES)}")
    run.add_argument("--epochs", type=int, help="training epochs")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set model.beta=0.5 (repeatable)",
    )
    run.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
    run.add_argument("--experiment", default=EXPERIMENT, help="MLflow experiment name")
    return parser


def configs_from_args(args: argparse.Namespace) -> list[ExperimentConfig]:
    """The validated configs a ``run`` command asks for."""
    chosen = sum([bool(args.names), args.all, bool(args.config)])
    if chosen != 1:
        raise ConfigError("give experiment NAMEs, --all or --config FILE (exactly one of them)")
    if args.config:
        base = [load_json(args.config)]
    else:
        base = [presets.get(n) for n in (presets.NOTEBOOKS if args.all else args.names)]
    overrides = dict(parse_override(s) for s in args.set)
    if args.data is not None:
        overrides["data.name"] = args.data
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    return [cfg.replace(**overrides) for cfg in base]


def _list() -> None:
    default = presets.DEFAULT.flat()
    for name, cfg in presets.PRESETS.items():
        diff = {k: v for k, v in cfg.flat().items() if v != default[k] and k != "name"}
        settings = " ".join(f"{k}={v}" for k, v in diff.items()) or "(the defaults)"
        print(f"{name:14s} {settings}")
    print("\ndefaults: " + " ".join(f"{k}={v}" for k, v in default.items() if k != "name"))


def _run(args: argparse.Namespace) -> int:
    # everything that can be wrong with the input is checked before the store is touched
    from experiments import data as data_module

    configs = configs_from_args(args)
    from experiments.packed import use_compile_cache

    use_compile_cache()  # before anything compiles
    datasets = {
        c.data: data_module.load(c.data.name, c.data.val_fraction, c.data.seed) for c in configs
    }
    from experiments import memory

    for cfg in configs:  # a size that cannot fit is refused before the first run starts
        memory.check(cfg, datasets[cfg.data].sizes(), what=cfg.name)

    from experiments import runner
    from experiments.train import TrainingDiverged
    from tracking.runs import Tracker, git_commit
    from tracking.store import TrackingError, check_store, mask, tracking_uri

    try:
        check_store(tracking_uri(args.tracking_uri))
    except TrackingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tracker = Tracker(args.experiment, args.tracking_uri)
    commit = git_commit()
    diverged = 0
    for cfg in configs:
        data = datasets[cfg.data]
        tags = {**runner.describe(cfg, data), "git_commit": commit, "preset": cfg.name}
        print(
            f"{cfg.name}: training {cfg.model.family} for {cfg.train.epochs} epochs on "
            f"{data.name} ({data.sizes()})",
            flush=True,
        )
        try:
            with tracker.start_run(cfg.name, params=cfg.flat(), tags=tags) as run:
                result = runner.run(cfg, data, run)
        except TrainingDiverged as err:  # the run is in the store, FAILED, with the reason
            print(f"error: {cfg.name}: training diverged: {err}", file=sys.stderr)
            diverged += 1
            continue
        f = result.final
        sparsity = (
            ""
            if cfg.model.family == "vae"
            # its codes are Gaussian means
            else f"mean_activation={f['test_mean_activation']:.3f} l0={f['test_l0']:.1f} "
        )
        print(
            f"{cfg.name}: val_mse={f['val_mse']:.4f} test_mse={f['test_mse']:.4f} "
            f"{sparsity}({result.seconds:.0f} s) run {run.run_id}",
            flush=True,
        )
    print(f"tracking store: {mask(tracker.uri)}; browse it with `make ui`")
    return 2 if diverged else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            _list()
            return 0
        return _run(args)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
