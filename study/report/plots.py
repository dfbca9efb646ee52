"""The study's figures: Optuna's own matplotlib plots (optimisation history, parameter
importances, slices), and the trade-off between reconstruction and sparsity a user chooses on.

Optuna's plots draw on pyplot figures; each is saved and closed here, so nothing accumulates in
pyplot's global state. Every function takes a list of trials, so a report can plot one family's
trials alone.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
from optuna.trial import FrozenTrial, TrialState

from study.results import OBJECTIVE, Constraint, completed, family
from study.space import SEARCHED_FAMILIES

DPI = 100
# below this, PED-ANOVA's top 10 % is no trial at all (Optuna advises 5 trials in it, i.e. ~50)
MIN_IMPORTANCE_TRIALS = 5
FAMILY_COLORS = {f: f"C{i}" for i, f in enumerate(SEARCHED_FAMILIES)}


def _study_of(trials: list[FrozenTrial]) -> optuna.Study:
    """An in-memory study holding ``trials``, for Optuna's plots of a subset."""
    study = optuna.create_study(direction="minimize")
    study.add_trials(trials)
    return study


def _save_pyplot(axes, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = np.ravel(axes)[0].figure
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


@contextlib.contextmanager
def _quiet():
    # Optuna marks its matplotlib plots experimental, and logs "no feasible trials", which the
    # report says itself
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # PED-ANOVA reminds that it ranks for low values (wanted here) and that few trials
            # make rough importances (the caption says so)
            warnings.filterwarnings("ignore", "PedAnovaImportanceEvaluator computes")
            warnings.filterwarnings("ignore", "Some regimes for parameter")
            # a slice of one trial has a zero-width axis, which matplotlib widens itself
            warnings.filterwarnings("ignore", "Attempting to set identical low and high xlims")
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def history(trials: list[FrozenTrial], path: Path) -> None:
    """Objective per completed trial, infeasible ones grey, and the best feasible value so far."""
    with _quiet():
        from optuna.visualization.matplotlib import plot_optimization_history

        ax = plot_optimization_history(_study_of(trials), target_name=OBJECTIVE)
        ax.set_title(f"Optimisation history: {OBJECTIVE} per completed trial")
        _save_pyplot(ax, path)


def importances(
    trials: list[FrozenTrial], target: Callable[[FrozenTrial], float], target_name: str, path: Path
) -> bool:
    """PED-ANOVA importances (Optuna's default, conditional parameters included) of
    ``target``; False when fewer than MIN_IMPORTANCE_TRIALS trials completed."""
    if sum(t.state == TrialState.COMPLETE for t in trials) < MIN_IMPORTANCE_TRIALS:
        return False
    with _quiet():
        from optuna.visualization.matplotlib import plot_param_importances

        ax = plot_param_importances(_study_of(trials), target=target, target_name=target_name)
        ax.set_title(f"Parameter importances for {target_name}", loc="left")
        _save_pyplot(ax, path)
    return True


def slices(trials: list[FrozenTrial], params: tuple[str, ...], title: str, path: Path) -> None:
    """Objective against each parameter (log axes), infeasible trials grey."""
    with _quiet():
        from optuna.visualization.matplotlib import plot_slice

        axes = plot_slice(_study_of(trials), params=list(params), target_name=OBJECTIVE)
        panels = list(np.ravel(np.asarray(axes, dtype=object)))
        fig = panels[0].figure
        fig.suptitle(title)
        fig.set_size_inches(max(4.5, 3.6 * len(params)) + 1.2, 3.8)
        for ax in panels:
            if ax.get_xscale() == "log":  # matplotlib's labels overlap on a narrow log axis
                ax.xaxis.set_major_locator(FixedLocator(log_ticks(*ax.get_xlim())))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
        _renumber_colorbar(fig, [t.number for t in trials if t.state == TrialState.COMPLETE])
        _save_pyplot(axes, path)


def log_ticks(low: float, high: float, most: int = 5) -> list[float]:
    """At least two and at most ``most`` round ticks in [low, high]: decades, else finer round
    steps, else two points spaced evenly on the log scale."""
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    for subs in ((1,), (1, 3), (1, 2, 5), (1, 1.5, 2, 3, 4, 5, 7)):
        ticks = [m * 10.0**k for k in decades for m in subs if low <= m * 10.0**k <= high]
        if len(ticks) >= 2:
            return ticks[:: math.ceil(len(ticks) / most)]
    return [float(f"{v:.3g}") for v in np.geomspace(low, high, 4)[1:3]]


def _renumber_colorbar(fig, numbers: list[int]) -> None:
    """Optuna colours points by trial number, which in the in-memory study of a subset runs
    0..n-1: label the colour bar with the study's own trial numbers instead."""
    cax = fig.axes[-1]
    if cax.get_ylabel() != "Trial" or not numbers:
        return
    lo, hi = sorted(cax.get_ylim())
    ticks = sorted(
        {
            k
            for k in np.linspace(lo, hi, 6).round().astype(int)
            if lo <= k <= hi and 0 <= k < len(numbers)
        }
    )
    cax.set_yticks(ticks, [str(numbers[k]) for k in ticks])
    cax.minorticks_off()
    cax.set_ylabel("trial")


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The lower-left front of (sparsity, error) points: each point no other point beats on
    both, by increasing sparsity measure."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


FRONTIER_AXES = (
    ("mean_activation", "validation mean activation (decoder-weighted)"),
    ("l0", "validation L0: active code units per digit"),
)


def frontier(
    trials: list[FrozenTrial],
    constraint: Constraint,
    mean_image: float,
    marked: dict[str, FrozenTrial],
    path: Path,
) -> Figure:
    """Validation MSE against the mean activation and against L0 of every completed trial, each
    family's Pareto front as a step line, the target where it applies, each family's winner
    (``marked``) starred, and the mean image's MSE (a model at or above it learned nothing).
    Saved to ``path``; the figure is returned too."""
    done = [
        t for t in completed(trials) if all(f"val_{m}" in t.user_attrs for m, _ in FRONTIER_AXES)
    ]
    fig = Figure(figsize=(12, 4.8), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    families = sorted({family(t) for t in done})
    for ax, (measure, label) in zip(axes, FRONTIER_AXES, strict=True):
        metric = f"val_{measure}"
        for fam in families:
            color = FAMILY_COLORS.get(fam, "0.3")
            points = [
                (t.user_attrs[metric], t.user_attrs[OBJECTIVE]) for t in done if family(t) == fam
            ]
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, s=14, color=color, alpha=0.35, lw=0, zorder=2)
            front = pareto(points)
            front.append((max(x for x, _ in points), front[-1][1]))  # on to the sparsest
            ax.step(
                [x for x, _ in front],
                [y for _, y in front],
                where="post",
                color=color,
                lw=1.8,
                label=f"{fam} ({len(points)} trials)",
                zorder=3,
            )
            if fam in marked:
                t = marked[fam]
                ax.scatter(
                    [t.user_attrs[metric]],
                    [t.user_attrs[OBJECTIVE]],
                    marker="*",
                    s=240,
                    color=color,
                    edgecolors="k",
                    zorder=4,
                )
        if constraint.measure == measure:
            ax.axvline(
                constraint.target, color="k", ls="--", lw=1.2, label=f"target {constraint.target:g}"
            )
        ax.axhline(mean_image, color="0.45", ls=":", lw=1.2, label=f"mean image {mean_image:.4f}")
        if measure == "mean_activation":  # spans decades; dead codes are exactly 0
            ax.set_xscale("symlog", linthresh=1e-3, linscale=0.5)
            ax.set_xlim(left=0)
        ax.set_xlabel(label)
    axes[0].set_ylabel(f"validation MSE ({OBJECTIVE})")
    axes[1].legend(loc="upper right", fontsize=9)
    fig.suptitle(
        f"Reconstruction against sparsity: {len(done)} completed trials, each "
        f"family's Pareto front, winners starred"
    )
    fig.savefig(path, dpi=DPI)
    return fig
