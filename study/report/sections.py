"""The report's page, as document blocks in reading order: summary and warnings, the study, the
confirmed configurations and the comparison (tables.py), topk beside the penalty families
(structural.py), the figures (gallery.py) and the files. Numbers come from what Optuna stored for
the trials and their confirmations (study/confirm.py); nothing is trained here.
"""

from __future__ import annotations

import math
import urllib.parse
from collections import Counter
from pathlib import Path

from optuna.trial import FrozenTrial

from experiments import presets
from study.report.document import Block, Bullets, Code, Heading, Paragraph, Warn
from study.report.findings import Findings
from study.report.gallery import figures
from study.report.numbers import num, pm, seconds
from study.report.structural import structural
from study.report.tables import comparison_table, confirmed_table, cost_sentence
from study.results import OBJECTIVE, Constraint, completed, family, feasible
from study.space import FAMILY_PARAMS, RANGES, near_edge
from study.storage import mask

UI_BASE = "http://127.0.0.1:5000"  # where `make ui` serves by default
FEASIBLE_TAG = "feasible"  # trial run tag, "true"/"false" (study/recording.py)
LEARNED_NOTHING = 0.95  # a val MSE above this fraction of the mean image's has learned nothing


def edge_warnings(best: dict[str, FrozenTrial]) -> list[str]:
    """One line per searched value of a family's best trial that lies near its range's edge."""
    lines = []
    for fam, t in best.items():
        for key in FAMILY_PARAMS[fam]:
            value = t.user_attrs["config"][key]
            side = near_edge(key, value)
            if side:
                r = RANGES[key]
                lines.append(
                    f"{fam}: the best `{key}` = {value:.3g} (trial {t.number}) lies at "
                    f"the {side} end of its range {r.low:g} … {r.high:g}; the optimum "
                    f"may lie beyond it: widen the range in study/space.py"
                )
    return lines


def summary(f: Findings) -> list[Block]:
    c = f.constraint.describe()
    if f.winner is not None:
        w, a = f.winner, f.winner.trial.user_attrs
        seeds = ", ".join(map(str, w.seeded.seeds))
        text = (
            f"Confirmed winner: trial {w.number} ({family(w.trial)}), test MSE "
            f"{pm(w, 'test_mse')} over fresh seeds {seeds} (worst seed "
            f"{num(w.seeded.worst('test_mse'))}), val MSE {pm(w, 'val_mse')}, mean "
            f"activation {num(w.seeded.mean('val_mean_activation'))} (worst "
            f"{num(w.seeded.worst('val_mean_activation'))}), L0 "
            f"{num(w.seeded.mean('val_l0'), 1)} active units per digit; constraint: {c}, "
            f"met on every seed. In the search, on the study's seed alone, it "
            f"scored val MSE {num(a['val_mse'])}, test MSE {num(a['test_mse'])}."
        )
        cost = cost_sentence(f)
        return [Paragraph(text), *([Paragraph(cost)] if cost else [])]
    if f.confirmed and not f.unconfirmed:
        closest = min(f.confirmed, key=lambda c: c.seeded.worst(f.constraint.metric))
        return [
            Paragraph(
                f"No confirmed winner: none of the {len(f.confirmed)} configuration(s) trained "
                f"again on fresh seeds {', '.join(map(str, closest.seeded.seeds))} met {c} on "
                f"every seed; the closest, trial {closest.number} ({family(closest.trial)}), "
                f"reached {num(closest.seeded.worst(f.constraint.metric))} on its worst seed. "
                f"The search's numbers below are one seed's; a looser target or a longer "
                f"search may find configurations that hold."
            )
        ]
    if f.search_overall is not None:
        t, a = f.search_overall, f.search_overall.user_attrs
        return [
            Paragraph(
                f"Not confirmed on fresh seeds: the search's best feasible trial is "
                f"{t.number} ({family(t)}), val MSE {num(a['val_mse'])}, test MSE "
                f"{num(a['test_mse'])} on the study's seed alone (the best of many "
                f"draws: expect it to do worse when trained again). Confirm it:"
            ),
            Code(f.confirm_command),
        ]
    return [
        Paragraph(
            f"No trial met the target ({c}); the closest is trial {f.shown.number} "
            f"at {num(f.shown.user_attrs.get(f.constraint.metric))}."
        )
    ]


def warnings(f: Findings) -> list[Block]:
    """Edges of the search space, winners that learned nothing or whose code is mostly dead,
    diverged and unconfirmed candidates, and a sparsity measure or a decoder open to
    rescaling."""
    lines = edge_warnings(f.search_best)
    latent = int(f.spec["model.latent"])
    for fam, c in f.winners.items():
        val = c.seeded.mean("val_mse")
        if val >= LEARNED_NOTHING * f.mean_image.val_mse:
            lines.append(
                f"{fam}: the confirmed winner (trial {c.number}) reconstructs no "
                f"better than the mean training image (val MSE {val:.4f} vs "
                f"{f.mean_image.val_mse:.4f}): it met the target by learning nothing"
            )
        dead = c.seeded.mean("val_dead_units")
        if dead >= latent / 2:
            lines.append(
                f"{fam}: {dead:.0f} of the {latent} code units of trial {c.number} are "
                f"dead on average (never active on the validation split)"
            )
    if f.diverged:
        lines.append(
            f"trial(s) {', '.join(map(str, f.diverged))} diverged on a fresh seed: not confirmed"
        )
    if f.unconfirmed and f.winner is not None:
        lines.append(
            f"trial(s) {', '.join(str(t.number) for t in f.unconfirmed)} are among "
            f"the best feasible but not confirmed on these seeds: "
            f"`{f.confirm_command}`"
        )
    if f.constraint.measure == "raw_activation":
        lines.append(
            "the constraint bounds the raw mean activation, which a relu code meets by "
            "shrinking while its decoder grows; judge sparsity by L0 and the "
            "decoder-weighted mean activation"
        )
    if not f.spec.get("model.decoder_norm"):
        lines.append(
            "no bound on the decoder columns (`model.decoder_norm=0`): the penalties act "
            "on codes that can shrink while the decoder grows, so they buy less "
            "sparsity than they cost (the measures here are weighted and not fooled)"
        )
    return [Heading("Warnings"), *map(Warn, lines)] if lines else []


def the_study(f: Findings) -> list[Block]:
    states = Counter(t.state.name for t in f.trials)
    n_feasible = sum(feasible(t, f.constraint) for t in completed(f.trials))
    starts = [t.datetime_start for t in f.trials if t.datetime_start]
    ends = [t.datetime_complete for t in f.trials if t.datetime_complete]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else math.nan
    busy = sum(t.duration.total_seconds() for t in f.trials if t.duration)
    s, default = f.spec, presets.DEFAULT.flat()
    fixed = [
        f"`{k}={s[k]}`"
        for k in default
        if k in s and s[k] != default[k] and k not in ("name", "data.name", "train.epochs")
    ]
    sizes = f.data.sizes()
    unrecorded = "not recorded (the study ran without MLflow)"
    tags = f.tags or {}
    seeds = sorted({x for c in f.confirmed for x in c.seeded.seeds})
    own = Constraint.of(s)
    items = [
        f"name: `{f.study_name}`; storage: `{mask(f.storage)}`",
        f"data: `{s['data.name']}`, {sizes['train']:,} training / {sizes['val']:,} validation / "
        f"{sizes['test']:,} test images (content hash {f.data.content_hash})",
        f"families: {', '.join(f.families)}",
        f"objective: minimise `{OBJECTIVE}`; constraint: `{f.constraint.metric}` ≤ "
        f"{f.constraint.target:g}"
        + (
            ""
            if own == f.constraint
            else f" (asked of the report; the study ran with `{own.metric}` ≤ {own.target:g})"
        ),
        f"budget: {len(f.trials)} trials, {s['train.epochs']} epochs each, batch size "
        f"{s['train.batch_size']}, {s['model.latent']} {s['model.activation']} code units; "
        f"fixed settings: {', '.join(fixed) or 'the defaults'}",
        f"sampler: {tags.get('sampler', unrecorded)}; pruner: {tags.get('pruner', unrecorded)}",
        f"trials: {states['COMPLETE']} complete ({n_feasible} feasible, "
        f"{states['COMPLETE'] - n_feasible} infeasible), {states['PRUNED']} pruned, "
        f"{states['FAIL']} failed"
        + (f", {states['RUNNING']} running" if states["RUNNING"] else ""),
        f"confirmation: {len(f.confirmed)} configuration(s) trained again on fresh seeds "
        f"{', '.join(map(str, seeds)) or '–'}; all trials of the search use seed "
        f"{s['train.seed']}",
        f"wall time: {seconds(span)} from the first trial's start to the last one's end; the "
        f"trials took {seconds(busy)} in all",
    ]
    if tags.get("git_commit"):
        items.append(f"code: git commit `{tags['git_commit']}`")
    return [Heading("The study"), Bullets(tuple(items))]


def files(f: Findings) -> list[Block]:
    items = [
        "`report.html`: this page, self-contained; `report.md`: the same, figures in `figures/`",
        "`summary.json`: the winner, its confirmation and the baselines, for programs",
        "`trials.csv`: one row per trial (params, measures, state, constraint, MLflow run)",
    ]
    if f.winner is not None or f.search_overall is not None:
        items.append(
            "`best_config.json`: the flat config of the "
            + ("confirmed winner" if f.winner else "search's best feasible trial")
        )
    if f.registered:
        items.append(
            f"MLflow Model Registry: `models:/{f.registered}`, the confirmed winner's "
            f"model (`mlflow.keras.load_model`)"
        )
    if f.tags is not None:
        from tracking.ui import experiment_links

        link = dict(experiment_links(f.uri, UI_BASE))[f.study_name]
        items += [
            f"MLflow: experiment `{f.study_name}` in `{f.uri}`, parent run `{f.parent}` "
            f"(this report is logged to it under `report/`), one child run per trial "
            f"and per confirmation seed",
            f"`make ui` serves it at {link}",
            f"its feasible trials, lowest `{OBJECTIVE}` first: {feasible_first(link)}",
        ]
    return [Heading("Files"), Bullets(tuple(items))]


def feasible_first(link: str) -> str:
    """A model-training-view link narrowed to the feasible trials, best first (the search
    filter and sort the README explains; the UI reads them from the URL)."""
    query = urllib.parse.urlencode(
        {
            "searchFilter": f"tags.{FEASIBLE_TAG} = 'true'",
            "orderByKey": f"metrics.`{OBJECTIVE}`",
            "orderByAsc": "true",
        },
        quote_via=urllib.parse.quote,
    )
    return f"{link}&{query}"


def page(f: Findings, folder: Path) -> list[Block]:
    """Every section, in reading order."""
    return (
        summary(f)
        + warnings(f)
        + the_study(f)
        + confirmed_table(f)
        + comparison_table(f)
        + structural(f)
        + figures(f, folder)
        + files(f)
    )
