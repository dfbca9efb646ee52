"""``python -m study bench`` (``make bench``): what packing, compiling and tracking cost, measured
in one run on the same data and model.

    python -m study bench [--data mnist-5k] [--epochs 20] [--trials 16] [--packs 1 4 8 16]

Every measurement runs in a fresh process of its own (the same Python, the same backend), so its
peak memory is its own and no compiled function or cache carries over. They all train the same
trial configurations (drawn once from the search space with a seeded random sampler), with no
pruning, so every variant does the same work:

- **single trial**: one trial's training, samples per second of the median epoch of 60: Keras's
  ``fit`` on the plain model, as the notebooks train (the baseline), also with the
  validation measures this project takes after every epoch, against this project's trainer (a
  pack of one, compiled, with those measures). The first epoch, which compiles, is timed apart.
- **study**: the trials as a study: one after another with plain ``fit`` and the same per-epoch
  measures (the baseline), then ``run_study`` with packs of K trials (K = 1 is one after another
  with this project's trainer). Trial-samples per second and trials per hour, start-up included.
  Also with XLA's compilation cache warm (``experiments.packed.use_compile_cache``, filled by one
  uncounted run first; TensorFlow and JAX): what a study sees after the first on the machine.
  Every other variant starts with an empty cache.
- **tracking**: the same study (default pack) with full MLflow tracking against tracking off: a
  trial's time from ask to tell, and the study's from start to end (every write done), on a
  tracking store that exists already, as a user's does.
- **arithmetic**: how far each is from what the CPU's arithmetic allows: the model's floating
  point operations per sample and training step (``train_flops``, from the config) against a
  large float32 matrix product timed in the same run (``matmul``).

The study variants run in ``--repeats`` rounds (default 3), each variant once per round, so that
a machine whose speed drifts during the bench slows them all alike; each keeps its median run,
and the table prints every run's seconds, so the spread is in sight. Tracking's cost is the
median over the rounds of the tracked study against the same round's study without. Ratios
against the baseline of the same bench are the figures that count (machines are noisy);
absolute numbers are for information.
Results: a table, and ``bench/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path

import optuna

from experiments.config import from_flat
from experiments.data import SOURCES
from experiments.presets import DEFAULT
from study import space
from study.bench_variants import MATMUL_SIDE, measure, train_flops

RESULTS = Path("bench/results.json")
# a study variant runs this many times and its median run is kept: one run of the same variant
# varied by up to a quarter on a shared 2-core machine
REPEATS = 3
# XLA's compilations are kept on disk (experiments.packed.use_compile_cache): a study after the
# first on a machine starts without compiling; measured apart, every other variant starts cold
WARM = "compile cache warm"
TRACKED = "tracked"  # the plan's row of the study with MLflow


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench's options, on the ``bench`` subcommand of study/cli.py."""
    parser.add_argument("--data", default=DEFAULT.data.name, help=f"one of {', '.join(SOURCES)}")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per trial (default 20)")
    parser.add_argument("--trials", type=int, default=16, help="trials per study (default 16)")
    parser.add_argument(
        "--packs",
        type=int,
        nargs="+",
        default=[1, 4, 8, 16],
        help="pack sizes to measure (default 1 4 8 16)",
    )
    parser.add_argument(
        "--backends",
        nargs="*",
        default=None,
        help="other Keras backends to measure this project's trainer on "
        "(default: jax when it is installed)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=REPEATS,
        help=f"runs of each study variant, the median kept (default {REPEATS})",
    )
    parser.add_argument("--out", default=str(RESULTS), help=f"results JSON (default {RESULTS})")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: one measurement


def trial_configs(n: int, epochs: int, data: str) -> list[dict[str, object]]:
    """``n`` flat configs from the search space, families in turn, drawn with a seeded sampler."""
    base = DEFAULT.replace(**{"name": "bench", "data.name": data, "train.epochs": epochs})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    families = space.DEFAULT_FAMILIES
    configs = []
    for i in range(n):
        study.enqueue_trial({"model.family": families[i % len(families)]})
        trial = study.ask()
        cfg = space.suggest(trial, base, families)
        # the learning rates TPE would drop early diverge here; bench the budget, not NaNs
        configs.append({**cfg.flat(), "train.learning_rate": min(cfg.train.learning_rate, 1e-2)})
        study.tell(trial, 0.0)
    return configs


def _in_child(
    variant: str,
    configs: list[dict],
    data: str,
    backend: str | None = None,
    cache: str | None = None,
) -> dict:
    """One measurement in a process of its own; XLA's compilation cache (JAX's or TensorFlow's)
    in ``cache``, or, by default, in an empty folder: nothing compiled before."""
    from experiments.packed import tf_cache_flags

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(configs, f)
    folder = cache or tempfile.mkdtemp(prefix="sae-bench-cache-")
    env = os.environ | {"JAX_COMPILATION_CACHE_DIR": folder, "TF_XLA_FLAGS": tf_cache_flags(folder)}
    env |= {"KERAS_BACKEND": backend} if backend else {}
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "study",
                "bench",
                "--variant",
                variant,
                "--out",
                f.name,
                "--data",
                data,
            ],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"bench variant {variant} failed: "
                f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}"
            )
        return json.loads(Path(f.name).read_text())
    finally:
        os.unlink(f.name)
        if cache is None:  # the empty folder made for this run
            shutil.rmtree(folder, ignore_errors=True)


def _table(
    header: Sequence[str],
    results: dict[str, dict],
    rate: str,
    baseline: float,
    limit: float,
    more: Sequence[tuple[str, str]] = (),
) -> str:
    """One row per result: its ``rate`` key, as a multiple of ``baseline`` and a fraction of
    ``limit``, then each ``(key, format)`` of ``more``."""
    rows = [tuple(header)]
    for name, r in results.items():
        rows.append(
            (
                name,
                f"{r[rate]:,.0f}",
                *(f"{r[key]:{form}}" for key, form in more[:1]),
                f"{r[rate] / baseline:.2f}",
                f"{r[rate] / limit:.1%}",
                *(f"{r[key]:{form}}" for key, form in more[1:]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def _median_run(runs: list[dict]) -> dict:
    """The run of median wall time (the slower middle one of an even number), with every run's
    seconds as ``runs_s``."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return ordered[len(ordered) // 2] | {
        "runs_s": " ".join(f"{r['seconds']:.1f}" for r in runs),
        "all_seconds": [r["seconds"] for r in runs],
    }


def main(args: argparse.Namespace) -> int:
    if args.variant:  # a child: configs come in through --out, the result goes back there
        configs = json.loads(Path(args.out).read_text())
        Path(args.out).write_text(json.dumps(measure(args.variant, configs, args.data)))
        return 0
    if args.epochs < 2 or min(args.trials, args.repeats, *args.packs) < 1:
        print("error: --epochs must be >= 2, --trials, --packs and --repeats >= 1", file=sys.stderr)
        return 2
    from experiments import data as data_module
    from experiments.data import DataError
    from experiments.slots import default_slots

    try:
        data = data_module.load(args.data)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import keras

    configs = trial_configs(args.trials, args.epochs, args.data)
    samples = args.trials * args.epochs * len(data.x_train)
    default = default_slots()
    print(
        f"bench: {args.trials} trials x {args.epochs} epochs of {len(data.x_train)} images "
        f"({args.data}), Keras {keras.__version__} on {keras.backend.backend()}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )

    def run(variant: str, backend: str | None = None, cache: str | None = None) -> dict:
        print(f"  measuring {variant}{f' on {backend}' if backend else ''} ...", flush=True)
        return _in_child(variant, configs, args.data, backend, cache)

    others = [
        b
        for b in (["jax"] if args.backends is None and find_spec("jax") else args.backends or [])
        if b != keras.backend.backend()
    ]
    single = {
        "plain fit": run("single-plain"),
        "plain fit + validation": run("single-plain:measured"),
        "project trainer + validation": run("single-packed"),
        **{f"project trainer + validation ({b})": run("single-packed", b) for b in others},
    }
    # the study variants: (variant, backend, XLA compilation cache) by row name
    plan: dict[str, tuple[str, str | None, str | None]] = {
        "sequential, plain fit": ("study-plain", None, None)
    }
    for k in args.packs:
        plan[f"pack {k}"] = (f"study:{k},off", None, None)
    plan |= {f"pack {default} ({b})": (f"study:{default},off", b, None) for b in others}
    with tempfile.TemporaryDirectory(prefix="sae-bench-cache-") as caches:
        for b in [b for b in (keras.backend.backend(), *others) if b in ("tensorflow", "jax")]:
            cache = str(Path(caches, b))
            plan[f"pack {default} ({b}, {WARM})"] = (f"study:{default},off", b, cache)
            run(f"study:{default},off", b, cache)  # fills the cache: not counted
        plan.setdefault(f"pack {default}", (f"study:{default},off", None, None))
        plan[TRACKED] = (f"study:{default},tracked", None, None)
        # round after round, every variant once in each: a machine whose speed drifts while
        # the bench runs slows all variants alike, not the ones measured last
        rounds = [{name: run(*how) for name, how in plan.items()} for _ in range(args.repeats)]
    studies = {name: _median_run([r[name] for r in rounds]) for name in plan}
    tracked = {"off": studies[f"pack {default}"], "full": studies.pop(TRACKED)}
    if default not in args.packs:
        studies.pop(f"pack {default}")
    # the cost of tracking in each round, against the same round's study without it
    paired = sorted(r[TRACKED]["seconds"] / r[f"pack {default}"]["seconds"] - 1 for r in rounds)
    rate = run("matmul")["flops_per_s"]
    flops = train_flops(from_flat(configs[0]))
    limit = rate / flops  # trial-samples/s the arithmetic allows

    for r in studies.values():
        r["trial_samples_per_s"] = samples / r["seconds"]
        r["trials_per_hour"] = args.trials * 3600 / r["seconds"]
    base_single = single["plain fit"]["samples_per_s"]
    base_study = studies["sequential, plain fit"]["trial_samples_per_s"]
    tables = (
        (
            ("single trial", "samples/s", "first epoch s", "x plain fit", "of limit", "peak MiB"),
            single,
            "samples_per_s",
            base_single,
            (("first_epoch_s", ".2f"), ("peak_rss_mib", ",.0f")),
        ),
        (
            (
                "study",
                "trial-samples/s",
                "trials/hour",
                "x sequential",
                "of limit",
                "runs, s (median kept)",
                "peak MiB",
            ),
            studies,
            "trial_samples_per_s",
            base_study,
            (("trials_per_hour", ",.0f"), ("runs_s", "s"), ("peak_rss_mib", ",.0f")),
        ),
    )
    for header, rows, rate_key, base, extra in tables:
        print("\n" + _table(header, rows, rate_key, base, limit, extra))
    overhead = paired[len(paired) // 2]  # the median round (the higher middle one of two)
    per_trial = tracked["full"]["trial_seconds"] / tracked["off"]["trial_seconds"] - 1
    print(
        f"\ntracking (pack {default}, every trial complete, figures and model for each):\n"
        f"  a trial, asked to told: {tracked['full']['trial_seconds']:.2f} s with MLflow, "
        f"{tracked['off']['trial_seconds']:.2f} s without: {per_trial:+.1%}\n"
        f"  the study, start to end (every write done): {overhead:+.1%} (the median of the "
        f"rounds, each against the same round without: {' '.join(f'{p:+.1%}' for p in paired)}"
        f"; runs with: {tracked['full']['runs_s']} s, without: {tracked['off']['runs_s']} s)"
    )
    full, off = tracked["full"], tracked["off"]
    writer = full["children_cpu_s"] - off["children_cpu_s"]
    print(
        f"  CPU per trial: the writer process (figures drawn, MLflow written) "
        f"{writer / args.trials:.2f} s, the training process "
        f"{(full['cpu_s'] - off['cpu_s']) / args.trials:+.2f} s; training alone "
        f"{off['cpu_s'] / args.trials:.2f} s on {os.cpu_count()} CPUs"
    )
    cold = [k for k in studies if WARM not in k]
    best = max(cold, key=lambda k: studies[k]["trial_samples_per_s"])
    best_rate = studies[best]["trial_samples_per_s"]
    warm = "".join(
        f"  study, {k} vs sequential plain fit: {r['trial_samples_per_s'] / base_study:.2f}x\n"
        for k, r in studies.items()
        if WARM in k
    )
    trainer = single["project trainer + validation"]["samples_per_s"]
    print(
        f"\nratios, each against its baseline measured in this run:\n"
        f"  one trial, project trainer vs plain fit: {trainer / base_single:.2f}x "
        f"({trainer:,.0f} vs {base_single:,.0f} samples/s)\n"
        f"  study, {best} vs sequential plain fit: {best_rate / base_study:.2f}x "
        f"({best_rate:,.0f} vs {base_study:,.0f} trial-samples/s)\n"
        f"{warm}"
        f"  study with MLflow vs without (pack {default}): {overhead:+.1%} "
        f"(median of {len(paired)} rounds)\n"
        f"arithmetic: {flops / 1e6:.2f} MFLOP per sample and training step "
        f"(784-{from_flat(configs[0]).model.latent}-784, forward and backward, matrix "
        f"products); a {MATMUL_SIDE}x{MATMUL_SIDE} float32 matrix product runs "
        f"{rate / 1e9:.0f} GFLOP/s here now, so the limit is {limit:,.0f} trial-samples/s; "
        f"{best} reaches {best_rate / limit:.1%} of it"
    )
    print(
        "(+ validation: the measures on the validation split after every epoch, which a study "
        "needs for pruning)"
    )
    results = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "backend": keras.backend.backend(),
        "data": args.data,
        "epochs": args.epochs,
        "trials": args.trials,
        "default_pack": default,
        "single": single,
        "study": studies,
        "tracking": tracked,
        "arithmetic": {
            "train_flops_per_sample": flops,
            "matmul_flops_per_s": rate,
            "limit_trial_samples_per_s": limit,
        },
        "ratios": {
            "single_vs_plain": trainer / base_single,
            "single_vs_plain_with_validation": trainer
            / single["plain fit + validation"]["samples_per_s"],
            **{
                f"{k}_vs_sequential_plain": r["trial_samples_per_s"] / base_study
                for k, r in studies.items()
            },
            **{f"{k}_of_limit": r["trial_samples_per_s"] / limit for k, r in studies.items()},
            "tracking_overhead_per_trial": per_trial,
            "tracking_overhead_study": overhead,
            "tracking_overhead_rounds": paired,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")
    return 0
