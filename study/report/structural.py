"""topk beside the penalty families: at the same L0 (a sentence and a table), and, under a
mean-activation target, why topk's mean activation is not on their scale."""

from __future__ import annotations

import math

from optuna.trial import FrozenTrial

from experiments.topk import DECODER_NORM
from study.report import comparison
from study.report.document import Block, Heading, Paragraph, Table
from study.report.findings import Findings
from study.report.numbers import num
from study.results import OBJECTIVE, completed, family
from study.space import K

STRUCTURAL = "topk"  # the family whose sparsity is set, not paid for


def _median(values: list[float]) -> float:
    values = sorted(values)
    n = len(values)
    return math.nan if not n else (values[(n - 1) // 2] + values[n // 2]) / 2


def l0_sentence(trials: list[FrozenTrial], families: list[str], latent: int) -> str | None:
    """How far each penalty family's best is from topk's at the same L0, measured on the stored
    trials; None when topk has no trial at any of the levels."""
    penalty = [fam for fam in families if fam != STRUCTURAL]
    parts = []
    for level in (x for x in comparison.L0_LEVELS if x <= latent):
        best = comparison.best_at_l0(trials, families, level)
        if STRUCTURAL not in best:
            continue
        ref = best[STRUCTURAL].user_attrs[OBJECTIVE]
        others = [
            f"{fam} {best[fam].user_attrs[OBJECTIVE] / ref:.2f}×"
            if fam in best
            else f"{fam} none that sparse"
            for fam in penalty
        ]
        parts.append(
            f"at L0 ≤ {level:g}, topk {num(ref)} (trial {best[STRUCTURAL].number}, "
            f"k={best[STRUCTURAL].user_attrs['config'][K]})"
            + (f"; {', '.join(others)}" if others else "")
        )
    if not parts:
        return None
    return (
        "At the same L0, measured on the stored trials (every completed trial, one seed "
        "each: each family's lowest validation MSE among its trials with at most that many "
        "active units per digit, and each penalty family's as a multiple of topk's): "
        + "; ".join(parts)
        + "."
    )


def structural(f: Findings) -> list[Block]:
    """topk beside the penalty families: at the same L0 (a sentence and a table), and, under a
    mean-activation target, how its mean activation compares and why."""
    if STRUCTURAL not in f.families:
        return []
    latent = int(f.spec["model.latent"])
    blocks: list[Block] = [Heading("Structural sparsity: topk beside the penalty families")]
    sentence = l0_sentence(f.trials, f.families, latent)
    blocks.append(
        Paragraph(
            sentence
            or "No topk trial completed with L0 at or below "
            f"{', '.join(map(str, comparison.L0_LEVELS))}: nothing to compare "
            "at the same L0 yet."
        )
    )
    rows = []
    for level in (x for x in comparison.L0_LEVELS if x <= latent):
        for fam, t in comparison.best_at_l0(f.trials, f.families, level).items():
            a = t.user_attrs
            rows.append(
                (
                    f"≤ {level:g}",
                    fam,
                    str(t.number),
                    num(a[OBJECTIVE]),
                    num(a.get("test_mse")),
                    num(a["val_l0"], 1),
                    num(a["val_mean_activation"]),
                )
            )
    if rows:
        blocks.append(
            Table(
                ("L0", "family", "trial", "val MSE", "test MSE", "val L0", "val mean activation"),
                tuple(rows),
            )
        )
    if f.constraint.measure == "mean_activation":
        blocks += _mean_activation_note(f, latent)
    return blocks


def _mean_activation_note(f: Findings, latent: int) -> list[Block]:
    """Why topk's mean activation is not on the penalty families' scale, in numbers."""
    done = completed(f.trials)

    def medians(mine: list[FrozenTrial]) -> tuple[float, float]:
        # the mean decoder-weighted value of an active unit: mean activation × units / L0
        per_unit = [
            t.user_attrs["val_mean_activation"] * latent / t.user_attrs["val_l0"]
            for t in mine
            if t.user_attrs.get("val_l0")
        ]
        return _median([t.user_attrs["val_mean_activation"] for t in mine]), _median(per_unit)

    topk = [t for t in done if family(t) == STRUCTURAL and "val_l0" in t.user_attrs]
    rest = [t for t in done if family(t) != STRUCTURAL and "val_l0" in t.user_attrs]
    if not topk:
        return []
    act, unit = medians(topk)
    met = sum(f.constraint.met(t.user_attrs) for t in topk)
    text = (
        f"Under this study's target ({f.constraint.describe()}), topk is measured on a "
        f"scale that is not its own: its {len(topk)} completed trials have a median "
        f"validation mean activation of {num(act)}, and {met} of them meet the target"
    )
    if rest:
        rest_act, rest_unit = medians(rest)
        text += (
            f"; the penalty families' trials, {num(rest_act)}. Why: the mean activation "
            f"counts how large the code is, not how many units are on. An active topk unit "
            f"has a median decoder-weighted value of {num(unit, 2)} against the penalty "
            f"families' {num(rest_unit, 2)}"
        )
    else:
        text += (
            f". Why: the mean activation counts how large the code is, not how many "
            f"units are on; an active topk unit has a median decoder-weighted value of "
            f"{num(unit, 2)}"
        )
    norm = DECODER_NORM
    text += (
        f": nothing penalises a topk unit's size, and its decoder column is held at "
        f"norm {norm:g} (RMS {norm / math.sqrt(784):.2g} over the 784 pixels), so an "
        f"active unit takes the value the reconstruction needs, while the penalties pay "
        f"every unit to stay small. Compare the families on L0 (the right panel of the "
        f"frontier, the table above), or run the study with `--target-l0`."
    )
    return [Paragraph(text)]
