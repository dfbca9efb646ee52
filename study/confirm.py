"""Confirmation: the search's best configurations trained again with fresh seeds, and the
baselines trained the same way.

Every trial of a study trains with the study's seed, so the search compares configurations, not
luck; but the best of many trials is also the luckiest on that seed (the winner's curse), and
the search's best sit right at the sparsity target, which a configuration's sparsity misses or
meets from one seed to the next. After the search the ``top`` best feasible trials of each
family (by the search's validation MSE) are trained again with ``seeds`` fresh seeds (the
study's seed + 1, + 2, ...), packed like trials. A configuration *holds* when every seed meets
the target; a family none of whose confirmed configurations holds gets its next ``top``, up to
``ROUNDS`` times. Among those that hold, the lowest mean validation MSE over the seeds is the
family's winner, shown as mean ± sd with its worst seed. The baselines (study/baselines.py) get
their learning rate searched and are trained on the same fresh seeds.

Everything is stored with the study (user attrs ``confirmed:<trial number>``,
``diverged:<trial number>`` for a candidate whose training diverged on a fresh seed, and
``baseline:<preset>``), so a resumed study, ``python -m study confirm`` and the report reuse it;
a study resumed with more trials confirms only what is new. Each training of a fresh seed is also
an MLflow run under the study's parent run, tagged ``confirms=<trial number>`` (or
``baseline=<preset>``) and ``seed``; each family's winner's median seed also gets the trial's
figures and model, and the overall winner's model is registered in MLflow's Model Registry under
the study's name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial

from experiments.config import ExperimentConfig, from_flat
from experiments.data import Dataset
from study import baselines
from study.results import (
    ROUNDS,
    SEEDS,
    TOP,
    Constraint,
    Seeded,
    by_family,
    family,
    ranked_feasible,
)

ATTR = "confirmed:"  # study user attr prefix: confirmed:<trial number>
DIVERGED_ATTR = "diverged:"  # study user attr prefix: a candidate that diverged on a fresh seed
TOP_ATTR = "confirm_top"  # study user attr: the --confirm-top it was last confirmed with


def fresh_seeds(study_seed: int, n: int) -> tuple[int, ...]:
    """The seeds a confirmation trains with: none of them is the search's."""
    return tuple(study_seed + 1 + i for i in range(n))


@dataclass(frozen=True)
class Confirmed:
    """A trial's configuration trained again on fresh seeds."""

    trial: FrozenTrial
    seeded: Seeded
    run_ids: tuple[str, ...] = ()

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def config(self) -> dict:
        return self.trial.user_attrs["config"]

    def holds(self, constraint: Constraint) -> bool:
        """Every seed meets the target (a mean over the seeds would count the MSE of seeds that
        miss it: their denser codes reconstruct better)."""
        return self.seeded.worst(constraint.metric) - constraint.target <= 0

    def median_seed(self) -> int:
        """The index of the seed whose validation MSE is the median: the representative run."""
        values = self.seeded.values("val_mse")
        return sorted(range(len(values)), key=values.__getitem__)[(len(values) - 1) // 2]

    def to_attr(self) -> dict:
        return {
            "seeds": list(self.seeded.seeds),
            "finals": [dict(f) for f in self.seeded.finals],
            "run_ids": list(self.run_ids),
        }


def stored(
    study: optuna.Study,
    trials: list[FrozenTrial] | None = None,
    seeds: tuple[int, ...] | None = None,
) -> dict[int, Confirmed]:
    """The confirmations stored with the study, by trial number (those on ``seeds``, if given)."""
    trials = trials if trials is not None else study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    out = {}
    for key, value in study.user_attrs.items():
        if not key.startswith(ATTR):
            continue
        number = int(key.removeprefix(ATTR))
        if number in by_number and (seeds is None or tuple(value["seeds"]) == seeds):
            out[number] = Confirmed(
                by_number[number],
                Seeded(tuple(value["seeds"]), tuple(value["finals"])),
                tuple(value.get("run_ids", ())),
            )
    return out


def diverged(study: optuna.Study, seeds: tuple[int, ...]) -> set[int]:
    """The candidates whose training diverged on one of ``seeds``: not confirmed, not retried."""
    return {
        int(key.removeprefix(DIVERGED_ATTR))
        for key, value in study.user_attrs.items()
        if key.startswith(DIVERGED_ATTR) and tuple(value["seeds"]) == seeds
    }


def candidates(
    trials: list[FrozenTrial],
    families: list[str],
    constraint: Constraint,
    top: int,
    confirmed: dict[int, Confirmed],
    settled: Collection[int] = (),
) -> list[FrozenTrial]:
    """What a confirmation trains: each family's best feasible trials by the search's value,
    ``top`` at a time. The next ``top`` join once every one before them is ``confirmed`` (or
    ``settled``: it diverged on a seed) and none holds, at most ``ROUNDS`` times ``top``."""
    out: list[FrozenTrial] = []
    for mine in by_family(trials, families).values():
        ranked = ranked_feasible(mine, constraint)[: ROUNDS * top]
        for start in range(0, len(ranked), max(top, 1)):
            batch = ranked[start : start + top]
            out += batch
            found = [confirmed.get(t.number) for t in batch]
            waiting = any(
                c is None and t.number not in settled for t, c in zip(batch, found, strict=True)
            )
            if waiting or any(c is not None and c.holds(constraint) for c in found):
                break
    return out


def winners(
    confirmed: dict[int, Confirmed],
    families: list[str],
    constraint: Constraint,
    among: list[FrozenTrial] | None = None,
) -> dict[str, Confirmed]:
    """Each family's confirmed winner: the lowest mean validation MSE over the seeds among the
    confirmations (of the trials ``among``, if given) that hold on every seed."""
    allowed = None if among is None else {t.number for t in among}
    out = {}
    for name in families:
        mine = [
            c
            for c in confirmed.values()
            if c.config["model.family"] == name
            and c.holds(constraint)
            and (allowed is None or c.number in allowed)
        ]
        if mine:
            out[name] = min(mine, key=lambda c: c.seeded.mean("val_mse"))
    return out


def overall(family_winners: dict[str, Confirmed]) -> Confirmed | None:
    return min(family_winners.values(), key=lambda c: c.seeded.mean("val_mse"), default=None)


@dataclass
class Outcome:
    """What a confirmation found: the winners, the baselines, and how much it trained."""

    winners: dict[str, Confirmed]
    winner: Confirmed | None
    baselines: dict[str, baselines.Baseline]
    trained: int  # trainings this call ran (0: all was stored already)
    missing: list[int]  # candidate trials that could not be confirmed (diverged)
    registered: str | None = None  # "name/version" when the registry got a new version
    # configurations confirmed per family, those that hold or not (0: no feasible trial)
    confirmed: dict[str, int] = field(default_factory=dict)


def _unguarded(what: str, call: Callable, default):
    return call()


class Recorder:
    """Where confirmation runs go in MLflow: child runs of the study's parent run. ``guard``
    (``StudyTracking.guarded`` in a study) makes a failing store a counted failure, not the
    end of the confirmation; the results are stored with the study either way."""

    def __init__(
        self, tracker, parent, study_name: str, data: Dataset, guard: Callable = _unguarded
    ):
        self.tracker, self.parent, self.study_name, self.data = tracker, parent, study_name, data
        self.guard = guard

    def run(self, name: str, cfg: ExperimentConfig, tags: dict, final: dict) -> str:
        """A finished run of one training's params and final measures; its id ("" when the
        store failed)."""

        def write() -> str:
            run = self.tracker.start_run(
                name,
                params=cfg.flat(),
                parent=self.parent,
                tags={
                    **tags,
                    "study": self.study_name,
                    "family": cfg.model.family,
                    "seed": cfg.train.seed,
                },
            )
            run.log_metrics(final, step=cfg.train.epochs)
            run.finish("FINISHED")
            return run.run_id

        return self.guard(f"recording {name}", write, "")


def confirm(
    study: optuna.Study,
    base: ExperimentConfig,
    data: Dataset,
    families: list[str],
    constraint: Constraint,
    top: int = TOP,
    n_seeds: int = SEEDS,
    pack: int = 8,
    recorder: Recorder | None = None,
    say: Callable[[str], None] = print,
) -> Outcome:
    """Confirm the top trials of each family under ``constraint`` and train the baselines, all
    on ``n_seeds`` fresh seeds; store the results with the study and, with a ``recorder``, as
    MLflow runs. Only what is not stored yet is trained."""
    from experiments.runner import Result, record_artifacts, train_all
    from study.objective import trial_figures

    seeds = fresh_seeds(base.train.seed, n_seeds)
    if study.user_attrs.get(TOP_ATTR) != top:
        study.set_user_attr(TOP_ATTR, top)
    trials = study.get_trials(deepcopy=False)
    done = stored(study, trials, seeds)
    have = baselines.stored(study, seeds)
    grid_todo = [n for n in baselines.PRESETS if n not in have]
    grid = [
        (n, lr, baselines.config(base, n, lr, base.train.seed))
        for n in grid_todo
        for lr in baselines.lr_grid()
    ]
    models: dict[tuple[int, int], Result] = {}
    missing = sorted(diverged(study, seeds))  # a seed diverged: the configuration is not confirmed
    trained, first = 0, True  # the first round also searches the baselines' learning rates
    grid_results: list[Result | None] = []
    while True:  # a round each time a family's candidates all miss the target on a seed
        chosen = candidates(trials, families, constraint, top, done, missing)
        todo = [t for t in chosen if t.number not in done and t.number not in missing]
        now = grid if first else []
        if not todo and not now:
            break
        jobs = [
            (t, from_flat({**t.user_attrs["config"], "train.seed": s})) for t in todo for s in seeds
        ]
        if first:
            say(
                f"confirming {len(todo)} configuration(s) on seeds {', '.join(map(str, seeds))}"
                f" and searching the learning rate of {len(grid_todo)} baseline(s): "
                f"{len(jobs) + len(now)} trainings"
            )
        else:
            say(
                f"no configuration confirmed so far holds on every seed in "
                f"{', '.join(sorted({family(t) for t in todo}))}: confirming the next "
                f"{len(todo)}: {len(jobs)} trainings"
            )
        results = train_all([cfg for _, cfg in jobs] + [cfg for *_, cfg in now], data, pack)
        trained += len(jobs) + len(now)
        if first:
            grid_results, first = results[len(jobs) :], False
        for t in todo:
            outcomes = [
                (cfg, r)
                for (trial, cfg), r in zip(jobs, results[: len(jobs)], strict=True)
                if trial is t
            ]
            mine = [(cfg, r) for cfg, r in outcomes if isinstance(r, Result)]
            if len(mine) < len(outcomes):
                missing.append(t.number)
                study.set_user_attr(DIVERGED_ATTR + str(t.number), {"seeds": list(seeds)})
                continue
            run_ids = (
                ()
                if recorder is None
                else tuple(
                    recorder.run(
                        f"confirm trial {t.number} seed {cfg.train.seed}",
                        cfg,
                        {"kind": "confirmation", "confirms": t.number},
                        r.final,
                    )
                    for cfg, r in mine
                )
            )
            for cfg, r in mine:
                models[(t.number, cfg.train.seed)] = r
            done[t.number] = Confirmed(t, Seeded(seeds, tuple(r.final for _, r in mine)), run_ids)
            study.set_user_attr(ATTR + str(t.number), done[t.number].to_attr())
    if grid_todo:
        chosen_rates = {}
        for name in grid_todo:
            points = [
                (lr, r.final["val_mse"] if isinstance(r, Result) else float("inf"))
                for (n, lr, _), r in zip(grid, grid_results, strict=True)
                if n == name
            ]
            chosen_rates[name] = (min(points, key=lambda p: p[1])[0], points)
        seeded_jobs = [
            (name, baselines.config(base, name, chosen_rates[name][0], s))
            for name in grid_todo
            for s in seeds
        ]
        seeded_results = train_all([cfg for _, cfg in seeded_jobs], data, pack)
        trained += len(seeded_jobs)
        for name in grid_todo:
            trained_here = [
                (cfg, r)
                for (n, cfg), r in zip(seeded_jobs, seeded_results, strict=True)
                if n == name
            ]
            finals = tuple(r.final if isinstance(r, Result) else {} for _, r in trained_here)
            run_ids = (
                ()
                if recorder is None
                else tuple(
                    recorder.run(
                        f"baseline {name} seed {cfg.train.seed}",
                        cfg,
                        {"kind": "baseline", "baseline": name},
                        f,
                    )
                    if f
                    else ""
                    for (cfg, _), f in zip(trained_here, finals, strict=True)
                )
            )
            lr, points = chosen_rates[name]
            have[name] = baselines.Baseline(
                name,
                tuple(points),
                lr,
                Seeded(seeds, finals),
                baselines.config(base, name, lr, base.train.seed).flat(),
                run_ids,
            )
            study.set_user_attr(baselines.ATTR + name, have[name].to_attr())
    family_winners = winners(done, families, constraint, among=chosen)
    winner = overall(family_winners)
    registered = None
    if recorder is not None:
        for c in family_winners.values():
            i = c.median_seed()
            result = models.get((c.number, c.seeded.seeds[i]))
            if result is not None and c.run_ids and c.run_ids[i]:  # drawn once, when new
                cfg = from_flat({**c.config, "train.seed": c.seeded.seeds[i]})
                run = recorder.tracker.run(c.run_ids[i])
                recorder.guard(
                    f"recording the figures of trial {c.number}",
                    functools.partial(
                        record_artifacts,
                        run,
                        result,
                        data,
                        cfg,
                        figure_names=trial_figures(cfg, data),
                    ),
                    None,
                )
        if winner is not None:
            registered = recorder.guard(
                "registering the winner's model",
                lambda: register(recorder, winner, models, constraint),
                None,
            )
    counts = {f: sum(family(t) == f and t.number in done for t in chosen) for f in families}
    missing = [t.number for t in chosen if t.number in missing]
    return Outcome(family_winners, winner, have, trained, missing, registered, counts)


def register(
    recorder: Recorder, winner: Confirmed, models: dict, constraint: Constraint
) -> str | None:
    """Register the overall winner's model (its median seed) under the study's name, unless
    the latest version is this winner already; returns "name/version" when registered."""
    from tracking.registry import register_model

    i = winner.median_seed()
    result = models.get((winner.number, winner.seeded.seeds[i]))
    if result is None or not winner.run_ids or not winner.run_ids[i]:
        return None  # confirmed earlier: registered then (or its run could not be made)
    s = winner.seeded
    tags = {
        "study": recorder.study_name,
        "trial": winner.number,
        "family": winner.config["model.family"],
        "seeds": ",".join(map(str, s.seeds)),
        "seed": s.seeds[i],
        "constraint": constraint.describe(),
        **{
            f"{key}_mean": f"{s.mean(key):.6g}"
            for key in ("val_mse", "test_mse", "val_mean_activation", "val_l0", "test_fvu")
        },
        **{f"{key}_sd": f"{s.sd(key):.6g}" for key in ("val_mse", "test_mse")},
        "config": winner.config,
    }
    return register_model(
        recorder.tracker.uri,
        recorder.study_name,
        winner.run_ids[i],
        result.model,
        tags,
        identity=("trial", "seeds"),
    )
