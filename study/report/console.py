"""What ``python -m study run`` and ``python -m study confirm`` print when they end: the search's
best trial per family (one seed), the confirmed winners (mean ± sd over fresh seeds, worst seed),
the baselines, and the cost of sparsity against the tuned dense autoencoder."""

from __future__ import annotations

from collections.abc import Callable

from optuna.trial import FrozenTrial

from study import baselines, confirm
from study.report import comparison
from study.results import Constraint, best_per_family, closest_infeasible
from study.space import FAMILY_PARAMS


def _pm(seeded, key: str) -> str:
    return f"{seeded.mean(key):.4f} ± {seeded.sd(key):.4f}"


def search_lines(
    trials: list[FrozenTrial], families: list[str], constraint: Constraint
) -> list[str]:
    """The search's best feasible trial per family, labelled as one seed's numbers."""
    best = best_per_family(trials, families, constraint)
    if not best:
        lines = [f"no feasible trial: none reached {constraint.describe()}"]
        near = closest_infeasible(trials, constraint)
        if near is not None:
            lines.append(
                f"closest: trial {near.number} "
                f"({near.user_attrs['config']['model.family']}) "
                f"{constraint.metric}={near.user_attrs[constraint.metric]:.4f}, "
                f"val_mse={near.value:.4f}"
            )
        return lines

    def line(t: FrozenTrial) -> str:
        a = t.user_attrs
        return (
            f"trial {t.number:4d}: val_mse={a['val_mse']:.4f} test_mse={a['test_mse']:.4f} "
            f"mean_act={a['val_mean_activation']:.4f} "
            f"l0={a.get('val_l0', float('nan')):.1f}"
        )

    return [
        "search, best feasible per family (the study's seed only):",
        *_per_family(families, best, line, lambda _: "no feasible trial"),
    ]


def _per_family(
    families: list[str], found: dict, line: Callable, missing: Callable[[str], str]
) -> list[str]:
    """One line per family: ``line(found[family])``, or ``missing(family)``."""
    return [
        f"  {family:9s} " + (line(found[family]) if family in found else missing(family))
        for family in families
    ]


def confirmation_lines(
    outcome: confirm.Outcome,
    families: list[str],
    constraint: Constraint,
    refs: list[baselines.Reference],
) -> list[str]:
    """The confirmed winners, the baselines and the cost of sparsity."""
    lines = []
    seeds = next((c.seeded.seeds for c in outcome.winners.values()), None) or next(
        (b.seeded.seeds for b in outcome.baselines.values()), ()
    )
    lines.append(
        f"confirmed on fresh seeds {', '.join(map(str, seeds))} (mean ± sd; worst "
        f"seed), a configuration holding when every seed meets {constraint.describe()}:"
    )

    def line(c: confirm.Confirmed) -> str:
        s = c.seeded
        return (
            f"trial {c.number:4d}: test_mse={_pm(s, 'test_mse')} (worst "
            f"{s.worst('test_mse'):.4f}) mean_act={s.mean('val_mean_activation'):.4f} "
            f"(worst {s.worst('val_mean_activation'):.4f}) l0={s.mean('val_l0'):.1f}"
        )

    def absent(name: str) -> str:
        if n := outcome.confirmed.get(name, 0):
            return f"none of its {n} confirmed configuration(s) meets the target on every seed"
        return "no feasible trial to confirm"

    lines += _per_family(families, outcome.winners, line, absent)
    if outcome.missing:
        lines.append(
            f"  not confirmed (a seed diverged): trial(s) {', '.join(map(str, outcome.missing))}"
        )
    lines.append("baselines, the study's budget and settings, learning rate searched:")
    for name, b in outcome.baselines.items():
        s = b.seeded
        if not all(s.finals):
            lines.append(f"  {name:12s} diverged on a seed at learning rate {b.learning_rate:g}")
            continue
        lines.append(
            f"  {name:12s} lr={b.learning_rate:<7g} test_mse={_pm(s, 'test_mse')} "
            f"mean_act={s.mean('val_mean_activation'):.4f} l0={s.mean('val_l0'):.1f}"
        )
    for r in refs:
        lines.append(f"  {r.name:12s} test_mse={r.test_mse:.4f}")
    lines += cost_lines(outcome, refs)
    return lines


def cost_lines(outcome: confirm.Outcome, refs: list[baselines.Reference]) -> list[str]:
    """The confirmed winner's test MSE against the tuned dense model, PCA and the mean image."""
    ratios = comparison.cost(outcome.winner, outcome.baselines, refs)
    if ratios is None:
        return []
    return [
        f"cost of sparsity: the confirmed winner's test MSE is {ratios['vs_dense']:.2f}x "
        f"the tuned dense autoencoder's, {ratios['vs_pca']:.2f}x PCA's, "
        f"{ratios['vs_mean_image']:.2f}x the mean image's (dense: "
        f"{ratios['dense_vs_pca']:.2f}x PCA's)"
    ]


def winner_lines(
    outcome: confirm.Outcome, artifact_uri: Callable[[str], str | None] | None
) -> list[str]:
    """The overall confirmed winner: its values, where its figures are, how to retrain it."""
    c = outcome.winner
    if c is None:
        return []
    lines = [
        f"\nconfirmed winner: trial {c.number} ({c.config['model.family']}), "
        f"test_mse={_pm(c.seeded, 'test_mse')}"
    ]
    lines += [f"  {key} = {c.config[key]:.4g}" for key in FAMILY_PARAMS[c.config["model.family"]]]
    if outcome.registered:
        lines.append(f"registered: models:/{outcome.registered}")
    run_id = c.run_ids[c.median_seed()] if c.run_ids else ""
    where = artifact_uri(run_id) if artifact_uri is not None and run_id else None
    if where:
        where = where.removeprefix("file://")
        lines.append(f"figures: {where}/figures/")
        lines.append(
            f"retrain it (any seed: --set train.seed=N): "
            f"python -m experiments run --config {where}/config.json"
        )
    lines.append("browse every trial: make ui; write a report to share: make report")
    return lines
