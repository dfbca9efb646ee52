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
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
from optuna.trial import FrozenTrial, TrialState

from study.objective import CONSTRAINT, OBJECTIVE
from study.runner import feasible
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


def importances(trials: list[FrozenTrial], target: Callable[[FrozenTrial], float],
                target_name: str, path: Path) -> bool:
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
        fig = np.ravel(axes)[0].figure
        fig.suptitle(title)
        fig.set_size_inches(max(4.5, 3.6 * len(params)) + 1.2, 3.8)
        for ax in np.ravel(axes):
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
        ticks = [m * 10.0 ** k for k in decades for m in subs if low <= m * 10.0 ** k <= high]
        if len(ticks) >= 2:
            return ticks[::math.ceil(len(ticks) / most)]
    return [float(f"{v:.3g}") for v in np.geomspace(low, high, 4)[1:3]]


def _renumber_colorbar(fig, numbers: list[int]) -> None:
    """Optuna colours points by trial number, which in the in-memory study of a subset runs
    0..n-1: label the colour bar with the study's own trial numbers instead."""
    cax = fig.axes[-1]
    if cax.get_ylabel() != "Trial" or not numbers:
        return
    lo, hi = sorted(cax.get_ylim())
    ticks = sorted({k for k in np.linspace(lo, hi, 6).round().astype(int)
                    if lo <= k <= hi and 0 <= k < len(numbers)})
    cax.set_yticks(ticks, [str(numbers[k]) for k in ticks])
    cax.minorticks_off()
    cax.set_ylabel("trial")


def tradeoff(trials: list[FrozenTrial], target: float, mean_image: float,
             best: FrozenTrial | None, path: Path) -> None:
    """Validation MSE against validation mean activation of every completed trial: the target
    line, feasible trials filled, infeasible hollow, the best feasible starred, and the MSE of
    predicting the mean training image (a model at or above it has learned nothing)."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and CONSTRAINT in t.user_attrs]
    fig = Figure(figsize=(9, 5.2), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.axvspan(0, target, color="tab:green", alpha=0.08, lw=0)
    ax.axvline(target, color="tab:green", ls="--", lw=1.2)
    ax.axhline(mean_image, color="0.45", ls=":", lw=1.2)
    families = sorted({t.user_attrs["config"]["model.family"] for t in done})
    for family in families:
        mine = [t for t in done if t.user_attrs["config"]["model.family"] == family]
        x = np.array([t.user_attrs[CONSTRAINT] for t in mine])
        y = np.array([t.user_attrs[OBJECTIVE] for t in mine])
        ok = np.array([feasible(t) for t in mine], dtype=bool)
        color = FAMILY_COLORS.get(family, "0.3")
        ax.scatter(x[ok], y[ok], s=36, color=color, edgecolors=color, zorder=3)
        ax.scatter(x[~ok], y[~ok], s=36, facecolors="none", edgecolors=color, zorder=3)
    if best is not None:
        bx, by = best.user_attrs[CONSTRAINT], best.user_attrs[OBJECTIVE]
        ax.scatter([bx], [by], marker="*", s=260, color="gold", edgecolors="k", zorder=4)
        ax.annotate(f"best feasible: trial {best.number}", (bx, by), xytext=(8, -14),
                    textcoords="offset points", fontsize=9)
    # activations span decades and dead codes are exactly 0: linear below 1e-3, log above
    ax.set_xscale("symlog", linthresh=1e-3, linscale=0.5)
    ax.set_xlim(left=0)
    ax.set_xlabel(f"validation mean code activation ({CONSTRAINT})")
    ax.set_ylabel(f"validation MSE ({OBJECTIVE})")
    ax.set_title(f"Reconstruction against sparsity: {len(done)} completed trials")
    handles = [Line2D([], [], marker="o", ls="", color=FAMILY_COLORS.get(f, "0.3"), label=f)
               for f in families]
    handles += [Line2D([], [], marker="o", ls="", color="0.3", label="feasible"),
                Line2D([], [], marker="o", ls="", markerfacecolor="none", color="0.3",
                       label="infeasible"),
                Line2D([], [], color="tab:green", ls="--", label=f"target {target:g}"),
                Line2D([], [], color="0.45", ls=":", label=f"mean image {mean_image:.4f}")]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.savefig(path, dpi=DPI)
