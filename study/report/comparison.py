"""The report's comparison: each family's confirmed winner beside the baselines (the dense
autoencoder and the notebooks' hand-tuned sparse settings, each with the study's budget and
settings and a searched learning rate, study/baselines.py), PCA and the mean image, all on the
same test split; the cost of sparsity; and the families side by side at the same L0."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from study import baselines
from study.confirm import Confirmed
from study.results import OBJECTIVE, Seeded, by_family, completed

# active code units per digit at which the families' frontiers are compared (docs/topk.md)
L0_LEVELS = (2, 4, 8)

CODE_MEASURES = ("mean_activation", "l0", "active_fraction", "hoyer")


@dataclass(frozen=True)
class Row:
    """One line of the table: seed means (and sds) of the test measures, or one value."""

    model: str
    chosen: str
    val_mse: float
    test_mse: float
    test_mse_sd: float | None  # None: not trained on seeds (PCA, the mean image)
    test: dict[str, float]  # fvu and CODE_MEASURES; NaN where a model has no code


def _seeded_row(model: str, chosen: str, s: Seeded) -> Row:
    return Row(
        model,
        chosen,
        s.mean("val_mse"),
        s.mean("test_mse"),
        s.sd("test_mse"),
        {k: s.mean(f"test_{k}") for k in ("fvu", *CODE_MEASURES)},
    )


def winner_rows(winners: dict[str, Confirmed], overall: Confirmed | None) -> list[Row]:
    return [
        _seeded_row(
            f"{family} (winner)" if c is overall else family,
            f"confirmed trial {c.number}, {len(c.seeded.seeds)} seeds",
            c.seeded,
        )
        for family, c in winners.items()
    ]


def baseline_rows(found: dict[str, baselines.Baseline]) -> list[Row]:
    return [
        _seeded_row(
            f"`{b.name}` preset",
            f"{b.description}; lr {b.learning_rate:g} of {len(b.grid)} tried",
            b.seeded,
        )
        for b in found.values()
        if all(b.seeded.finals)
    ]


def reference_rows(refs: list[baselines.Reference]) -> list[Row]:
    no_code = {k: math.nan for k in CODE_MEASURES}
    return [
        Row(r.name, r.description, r.val_mse, r.test_mse, None, {"fvu": r.test_fvu, **no_code})
        for r in refs
    ]


def cost(
    winner: Confirmed | None, found: dict[str, baselines.Baseline], refs: list[baselines.Reference]
) -> dict[str, float] | None:
    """The confirmed winner's mean test MSE over the tuned dense autoencoder's, PCA's and the
    mean image's, and the dense autoencoder's over PCA's; None without both."""
    dense = found.get(baselines.DENSE)
    if winner is None or dense is None or not all(dense.seeded.finals):
        return None
    w, d = winner.seeded.mean("test_mse"), dense.seeded.mean("test_mse")
    pca, mean_image = refs[0].test_mse, refs[-1].test_mse
    return {
        "vs_dense": w / d,
        "vs_pca": w / pca,
        "vs_mean_image": w / mean_image,
        "dense_vs_pca": d / pca,
    }


def best_at_l0(
    trials: Iterable[FrozenTrial], families: Iterable[str], level: float
) -> dict[str, FrozenTrial]:
    """Each family's completed trial with the lowest validation MSE among those with a
    validation L0 of at most ``level``: its frontier at that L0, read from the stored trials
    (feasible or not, one seed each). Families without such a trial are left out."""
    out = {}
    for family, mine in by_family(completed(trials), families).items():
        within = [t for t in mine if t.user_attrs.get("val_l0", math.inf) <= level]
        if within:
            out[family] = min(within, key=lambda t: t.user_attrs[OBJECTIVE])
    return out
