"""The report's figures: the study's charts, drawn here into the report's figures/ folder
(plots.py), and the shown trial's own figures (findings.py), each with what to read in it."""

from __future__ import annotations

from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from study.report import plots
from study.report.document import Block, Heading, Image, Paragraph
from study.report.findings import BEST_FIGURES, Findings
from study.results import OBJECTIVE, completed, family
from study.results import value as objective_value
from study.space import FAMILY_PARAMS


def figures(f: Findings, folder: Path) -> list[Block]:
    """Draw the study's figures into ``folder``/figures and show them, with what to read in
    each; the shown trial's own figures are expected there already."""
    out = folder / "figures"
    done = completed(f.trials)
    n_pruned = sum(t.state == TrialState.PRUNED for t in f.trials)
    marked = {fam: c.trial for fam, c in f.winners.items()} or f.search_best
    plots.frontier(f.trials, f.constraint, f.mean_image.val_mse, marked, out / "frontier.png")
    pruned = f" ({n_pruned} pruned trials stopped early and are not shown)" if n_pruned else ""
    blocks: list[Block] = [
        Heading("Figures"),
        Image(
            "figures/frontier.png",
            f"Validation MSE against the decoder-weighted mean activation (left) and against L0, "
            f"the active units per digit (right), of every completed trial{pruned}: one seed each. "
            f"The lines are each family's Pareto front (the lowest MSE at or below that sparsity); "
            f"stars mark the trials of each family's "
            f"{'confirmed winner' if f.winners else 'best feasible trial'}; the dashed line is the "
            f"target, the dotted one the mean image's MSE.",
        ),
    ]
    plots.history(f.trials, out / "history.png")
    blocks.append(
        Image(
            "figures/history.png",
            "Optimisation history (Optuna): each completed trial's val MSE, "
            "infeasible trials grey, and the best feasible value so far.",
        )
    )

    def penalised(t: FrozenTrial) -> float:
        return objective_value(t) + max(0.0, f.constraint.violation(t.user_attrs))

    if plots.importances(
        f.trials, penalised, f"{OBJECTIVE} + excess sparsity measure", out / "importances.png"
    ):
        blocks.append(
            Image(
                "figures/importances.png",
                f"Parameter importances (Optuna's PED-ANOVA, conditional parameters "
                f"included) for the val MSE plus how far the sparsity measure "
                f"exceeds the target, the constrained objective the pruner also "
                f"compares; from {len(done)} completed trials (steadier from "
                f"about 50).",
            )
        )
    else:
        blocks.append(
            Paragraph(
                f"Too few completed trials ({len(done)}) to tell parameter "
                f"importances (at least {plots.MIN_IMPORTANCE_TRIALS})."
            )
        )
    for fam in f.families:
        mine = [t for t in done if family(t) == fam]
        if mine:
            plots.slices(
                mine,
                FAMILY_PARAMS[fam],
                f"{fam}: {OBJECTIVE} per parameter",
                out / f"slice_{fam}.png",
            )
            blocks.append(
                Image(
                    f"figures/slice_{fam}.png",
                    f"Slice plot (Optuna) of the {len(mine)} completed {fam} "
                    f"trials: val MSE against each searched value, colour = trial "
                    f"number, infeasible grey.",
                )
            )
    what = (
        "confirmed winner"
        if f.winner is not None
        else "search's best feasible trial"
        if f.search_overall is not None
        else "trial closest to the target (no trial is feasible)"
    )
    blocks += [
        Heading(f"The {what}: trial {f.shown.number} ({family(f.shown)})", 3),
        Paragraph(f"Figures: {f.figure_source}."),
    ]
    blocks += [
        Image(f"figures/best_{name}.png", f"Trial {f.shown.number}: {caption}.")
        for name, caption in BEST_FIGURES.items()
    ]
    return blocks
