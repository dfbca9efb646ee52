"""What a study's results are called and which of them count: the objective, the sparsity
constraint, feasibility and the best trials. A leaf module (Optuna's trial types only), shared by
the search, the confirmation, the summary and the report.

The constraint bounds one sparsity measure of the validation split (experiments/metrics.py):

- ``mean_activation`` (default, ``--target``): the mean code activation, each unit weighted by
  its decoder column's RMS, so a code cannot meet it by shrinking while the decoder grows;
- ``l0`` (``--target-l0``): the mean number of active code units per digit;
- ``raw_activation`` (``--target-raw``): the unweighted mean activation, as the notebooks measured
  it; open to that rescaling, kept to reproduce them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from optuna import Study
from optuna.trial import FrozenTrial, TrialState

from experiments.config import ExperimentConfig, from_flat

OBJECTIVE = "val_mse"  # minimised; the pruner compares it plus the constraint's violation
MEASURES = {  # what a target can bound, and how the summary and the report name it
    "mean_activation": "mean activation",
    "l0": "L0 (active units per digit)",
    "raw_activation": "raw mean activation",
}
DEFAULT_MEASURE = "mean_activation"
RUN_ATTR = "mlflow_run_id"  # trial user attr: the trial's MLflow run
SPEC_ATTR = "spec"  # study user attr: families, target and fixed config it was created with
TOP, SEEDS = 3, 3  # defaults of --confirm-top and --confirm-seeds
ROUNDS = 3  # a family whose confirmed configurations all miss the target on a seed gets its next
# --confirm-top, this many times at most
DEFAULT_TARGET = 0.05  # the literature's p; measured on the frontier in README's results


@dataclass(frozen=True)
class Constraint:
    """``val_<measure>`` ≤ ``target``; Optuna stores the violation under the measure's name."""

    measure: str
    target: float

    @property
    def metric(self) -> str:
        """The validation measure it bounds, as trials and runs record it."""
        return f"val_{self.measure}"

    def violation(self, values: Mapping[str, float]) -> float:
        """How far ``values[metric]`` lies above the target (≤ 0: met)."""
        return float(values[self.metric]) - self.target

    def met(self, values: Mapping[str, float]) -> bool:
        return self.violation(values) <= 0

    def describe(self) -> str:
        return f"{MEASURES[self.measure]} ≤ {self.target:g}"

    @classmethod
    def of(
        cls, spec: Mapping[str, object], target: float | None = None, measure: str | None = None
    ) -> Constraint:
        """The constraint a study was created with (its spec user attr), or another target or
        measure asked of the same trials."""
        measure = measure or str(spec.get("measure", DEFAULT_MEASURE))
        if target is None:
            if measure != spec.get("measure", DEFAULT_MEASURE):
                raise ValueError(f"a target for {measure} is needed")
            target = float(spec["target"])  # type: ignore[arg-type]
        return cls(measure, float(target))


def family(trial: FrozenTrial) -> str:
    """The model family of a trial (its config), or its suggested family."""
    return str(
        trial.user_attrs.get("config", {}).get("model.family", trial.params.get("model.family", ""))
    )


def value(trial: FrozenTrial) -> float:
    """A completed trial's objective (Optuna types it optional: other states have none)."""
    if trial.value is None:
        raise ValueError(f"trial {trial.number} has no value: it is {trial.state.name}")
    return trial.value


def completed(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.COMPLETE]


def feasible(trial: FrozenTrial, constraint: Constraint | None = None) -> bool:
    """Whether the trial met the study's constraint as Optuna stored it, or ``constraint``
    judged on its recorded measures."""
    if constraint is not None:
        return constraint.metric in trial.user_attrs and constraint.met(trial.user_attrs)
    return bool(trial.constraints) and all(v <= 0 for v in trial.constraints.values())


def best_feasible(
    trials: Iterable[FrozenTrial], constraint: Constraint | None = None
) -> FrozenTrial | None:
    """The completed feasible trial with the lowest objective (the search's best, one seed)."""
    done = [t for t in completed(trials) if feasible(t, constraint)]
    return min(done, key=value) if done else None


def ranked_feasible(
    trials: Iterable[FrozenTrial], constraint: Constraint | None = None
) -> list[FrozenTrial]:
    """Completed feasible trials, lowest objective first."""
    return sorted((t for t in completed(trials) if feasible(t, constraint)), key=value)


def closest_infeasible(
    trials: Iterable[FrozenTrial], constraint: Constraint | None = None
) -> FrozenTrial | None:
    """The completed trial that came nearest the sparsity target."""
    if constraint is not None:
        done = [t for t in completed(trials) if constraint.metric in t.user_attrs]
        return min(done, key=lambda t: constraint.violation(t.user_attrs)) if done else None
    done = [t for t in completed(trials) if t.constraints]
    return min(done, key=lambda t: max(t.constraints.values())) if done else None


def by_family(
    trials: Iterable[FrozenTrial], families: Iterable[str]
) -> dict[str, list[FrozenTrial]]:
    """The trials of each family, in the families' order."""
    trials = list(trials)
    return {f: [t for t in trials if family(t) == f] for f in families}


def best_per_family(
    trials: Iterable[FrozenTrial], families: Iterable[str], constraint: Constraint | None = None
) -> dict[str, FrozenTrial]:
    """The best feasible trial of each family that has one."""
    best = {f: best_feasible(mine, constraint) for f, mine in by_family(trials, families).items()}
    return {f: t for f, t in best.items() if t is not None}


@dataclass(frozen=True)
class Seeded:
    """One configuration's final measures (``val_mse``, ``test_mse``, ...) after training with
    each of several seeds."""

    seeds: tuple[int, ...]
    finals: tuple[Mapping[str, float], ...]

    def values(self, key: str) -> list[float]:
        return [float(f[key]) for f in self.finals]

    def mean(self, key: str) -> float:
        values = self.values(key)
        return sum(values) / len(values)

    def sd(self, key: str) -> float:
        """Sample standard deviation over the seeds (0 for one seed)."""
        values, mean = self.values(key), self.mean(key)
        if len(values) < 2:
            return 0.0
        return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5

    def worst(self, key: str) -> float:
        """The largest value over the seeds (the worst seed, for an error or a sparsity)."""
        return max(self.values(key))

    def means(self) -> dict[str, float]:
        """The mean over the seeds of every measure they all have."""
        keys = set.intersection(*(set(f) for f in self.finals)) if self.finals else set()
        return {k: self.mean(k) for k in sorted(keys)}


@dataclass(frozen=True)
class StudySpec:
    """What defines a study; stored with it, and checked again when it is resumed."""

    name: str
    families: tuple[str, ...]
    target: float  # the largest acceptable value of the sparsity measure
    base: ExperimentConfig  # data, latent size, batch size, epochs, seed: fixed budget
    pruner: str
    measure: str = DEFAULT_MEASURE  # the sparsity measure the target bounds (study/results.py)

    @property
    def constraint(self) -> Constraint:
        return Constraint(self.measure, self.target)

    def describe(self) -> dict[str, str]:
        b = self.base
        return {
            "study": self.name,
            "families": ",".join(self.families),
            "target": repr(self.target),
            "measure": self.measure,
            "pruner": self.pruner,
            "sampler": "TPE",
            "data": b.data.name,
            "epochs": str(b.train.epochs),
            "latent": str(b.model.latent),
            "activation": b.model.activation,
            "penalty_layers": b.model.penalty_layers,
            "loss": b.train.loss,
            "decoder_norm": repr(b.model.decoder_norm),
            "seed": str(b.train.seed),
        }


def stored_spec(study: Study, target: tuple[str, float] | None = None) -> StudySpec:
    """The spec a study was created with (its user attr), or with another ``(measure,
    target)``; the pruner is not part of it."""
    stored = dict(study.user_attrs[SPEC_ATTR])
    families = tuple(str(stored.pop("families")).split(","))
    measure, value = target or (stored.get("measure", DEFAULT_MEASURE), stored["target"])
    for key in ("target", "measure"):
        stored.pop(key, None)
    return StudySpec(
        study.study_name, families, float(value), from_flat(stored), pruner="", measure=measure
    )
