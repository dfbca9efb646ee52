"""The report's sections, as document blocks: summary and warnings, the study, the confirmed
winners, the comparison, the figures (drawn here into the report's figures/ folder) and the files.
Numbers come from what Optuna stored for the trials and their confirmations (study/confirm.py);
nothing is trained here.
"""

from __future__ import annotations

import math
import shlex
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from experiments import presets
from experiments.data import Dataset
from experiments.topk import DECODER_NORM
from study import baselines, comparison, plots
from study.baselines import Baseline, Reference
from study.confirm import Confirmed
from study.document import Block, Bullets, Code, Heading, Image, Paragraph, Table, Warn
from study.results import OBJECTIVE, Constraint, completed, family, feasible
from study.results import value as objective_value
from study.space import FAMILY_PARAMS, RANGES, K, near_edge
from study.storage import mask

BEST_FIGURES = {  # figures of the winner's run, and what to look for in them
    "reconstruction": "test digits (top) over their reconstructions",
    "receptive_fields": "encoder weights of each code unit (red +, blue −)",
    "activations": "its code activations on the test split: how sparse, how many units dead",
}
UI_BASE = "http://127.0.0.1:5000"  # where `make ui` serves by default
FEASIBLE_TAG = "feasible"  # trial run tag, "true"/"false" (study/tracking.py)
LEARNED_NOTHING = 0.95  # a val MSE above this fraction of the mean image's has learned nothing


@dataclass(frozen=True)
class Findings:
    """Everything the sections show, gathered once."""

    study_name: str
    storage: str  # URL, masked where shown
    spec: dict  # the study's spec user attr: families, target, measure, the fixed flat config
    constraint: Constraint  # the study's own, or the one the report was asked for
    trials: list[FrozenTrial]
    search_best: dict[str, FrozenTrial]  # best feasible trial per family, one seed
    search_overall: FrozenTrial | None
    confirmed: list[Confirmed]  # the candidates' confirmations on the fresh seeds
    winners: dict[str, Confirmed]  # each family's confirmed winner
    winner: Confirmed | None
    unconfirmed: list[FrozenTrial]  # candidates not confirmed on those seeds
    confirm_command: str  # what confirms them
    baselines: dict[str, Baseline]
    references: list[Reference]  # PCA, then the mean image
    shown: FrozenTrial  # whose figures are shown
    figure_source: str
    data: Dataset
    uri: str  # MLflow tracking URI
    tags: dict[str, str] | None  # the parent run's tags; None without MLflow
    parent: str | None  # the parent run id
    folder: Path  # where the report will be
    registered: str | None  # "name/version" of the winner in MLflow's Model Registry

    @property
    def families(self) -> list[str]:
        return self.spec["families"].split(",")

    @property
    def mean_image(self) -> Reference:
        return self.references[-1]


def _f(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _pm(c: Confirmed, key: str, digits: int = 4) -> str:
    return f"{_f(c.seeded.mean(key), digits)} ± {_f(c.seeded.sd(key), digits)}"


def _seconds(s: float) -> str:
    return f"{s:.0f} s" + (f" ({s / 60:.1f} min)" if s >= 120 else "")


def _values(config: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]}={config[k]:.3g}"
                     for k in FAMILY_PARAMS[config["model.family"]])


def edge_warnings(best: dict[str, FrozenTrial]) -> list[str]:
    """One line per searched value of a family's best trial that lies near its range's edge."""
    lines = []
    for fam, t in best.items():
        for key in FAMILY_PARAMS[fam]:
            value = t.user_attrs["config"][key]
            side = near_edge(key, value)
            if side:
                r = RANGES[key]
                lines.append(f"{fam}: the best `{key}` = {value:.3g} (trial {t.number}) lies at "
                             f"the {side} end of its range {r.low:g} … {r.high:g}; the optimum "
                             f"may lie beyond it: widen the range in study/space.py")
    return lines


def reproduce_command(config: dict[str, object]) -> str:
    """The `python -m experiments run` command that trains ``config`` again: its preset and the
    values that differ from it."""
    preset = str(config["name"]) if config.get("name") in presets.PRESETS else "ae"
    data, epochs = config["data.name"], config["train.epochs"]
    base = presets.get(preset).replace(**{"data.name": data, "train.epochs": epochs}).flat()
    args = ["python", "-m", "experiments", "run", preset, "--data", str(data),
            "--epochs", str(epochs)]
    for key, value in config.items():
        if base.get(key) != value:
            args += ["--set", f"{key}={value!r}"]
    return shlex.join(args)


def cost_sentence(f: Findings) -> str | None:
    ratios = comparison.cost(f.winner, f.baselines, f.references)
    if ratios is None:
        return None
    return (f"Cost of sparsity: the confirmed winner's test MSE is {ratios['vs_dense']:.2f}× "
            f"the tuned dense autoencoder's, {ratios['vs_pca']:.2f}× PCA's and "
            f"{ratios['vs_mean_image']:.2f}× the mean image's (the dense autoencoder: "
            f"{ratios['dense_vs_pca']:.2f}× PCA's).")


def summary(f: Findings) -> list[Block]:
    c = f.constraint.describe()
    if f.winner is not None:
        w, a = f.winner, f.winner.trial.user_attrs
        seeds = ", ".join(map(str, w.seeded.seeds))
        text = (f"Confirmed winner: trial {w.number} ({family(w.trial)}), test MSE "
                f"{_pm(w, 'test_mse')} over fresh seeds {seeds} (worst seed "
                f"{_f(w.seeded.worst('test_mse'))}), val MSE {_pm(w, 'val_mse')}, mean "
                f"activation {_f(w.seeded.mean('val_mean_activation'))} (worst "
                f"{_f(w.seeded.worst('val_mean_activation'))}), L0 "
                f"{_f(w.seeded.mean('val_l0'), 1)} active units per digit; constraint: {c}, "
                f"met on average over the seeds. In the search, on the study's seed alone, it "
                f"scored val MSE {_f(a['val_mse'])}, test MSE {_f(a['test_mse'])}.")
        cost = cost_sentence(f)
        return [Paragraph(text), *([Paragraph(cost)] if cost else [])]
    if f.search_overall is not None:
        t, a = f.search_overall, f.search_overall.user_attrs
        return [Paragraph(f"Not confirmed on fresh seeds: the search's best feasible trial is "
                          f"{t.number} ({family(t)}), val MSE {_f(a['val_mse'])}, test MSE "
                          f"{_f(a['test_mse'])} on the study's seed alone (the best of many "
                          f"draws: expect it to do worse when trained again). Confirm it:"),
                Code(f.confirm_command)]
    return [Paragraph(f"No trial met the target ({c}); the closest is trial {f.shown.number} "
                      f"at {_f(f.shown.user_attrs.get(f.constraint.metric))}.")]


def warnings(f: Findings) -> list[Block]:
    """Edges of the search space, winners that learned nothing or whose code is mostly dead,
    unconfirmed candidates, and a sparsity measure or a decoder open to rescaling."""
    lines = edge_warnings(f.search_best)
    latent = int(f.spec["model.latent"])
    for fam, c in f.winners.items():
        val = c.seeded.mean("val_mse")
        if val >= LEARNED_NOTHING * f.mean_image.val_mse:
            lines.append(f"{fam}: the confirmed winner (trial {c.number}) reconstructs no "
                         f"better than the mean training image (val MSE {val:.4f} vs "
                         f"{f.mean_image.val_mse:.4f}): it met the target by learning nothing")
        dead = c.seeded.mean("val_dead_units")
        if dead >= latent / 2:
            lines.append(f"{fam}: {dead:.0f} of the {latent} code units of trial {c.number} are "
                         f"dead on average (never active on the validation split)")
    if f.unconfirmed and f.winner is not None:
        lines.append(f"trial(s) {', '.join(str(t.number) for t in f.unconfirmed)} are among "
                     f"the best feasible but not confirmed on these seeds: "
                     f"`{f.confirm_command}`")
    if f.constraint.measure == "raw_activation":
        lines.append("the constraint bounds the raw mean activation, which a relu code meets by "
                     "shrinking while its decoder grows; judge sparsity by L0 and the "
                     "decoder-weighted mean activation")
    if not f.spec.get("model.decoder_norm"):
        lines.append("no bound on the decoder columns (`model.decoder_norm=0`): the penalties act "
                     "on codes that can shrink while the decoder grows, so they buy less "
                     "sparsity than they cost (the measures here are weighted and not fooled)")
    return [Heading("Warnings"), *map(Warn, lines)] if lines else []


def the_study(f: Findings) -> list[Block]:
    states = Counter(t.state.name for t in f.trials)
    n_feasible = sum(feasible(t, f.constraint) for t in completed(f.trials))
    starts = [t.datetime_start for t in f.trials if t.datetime_start]
    ends = [t.datetime_complete for t in f.trials if t.datetime_complete]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else math.nan
    busy = sum(t.duration.total_seconds() for t in f.trials if t.duration)
    s, default = f.spec, presets.DEFAULT.flat()
    fixed = [f"`{k}={s[k]}`" for k in default if k in s and s[k] != default[k]
             and k not in ("name", "data.name", "train.epochs")]
    sizes = f.data.sizes()
    unrecorded = "not recorded (the study ran without MLflow)"
    tags = f.tags or {}
    seeds = sorted({x for c in f.confirmed for x in c.seeded.seeds})
    own = Constraint.of(s)
    items = [
        f"name: `{f.study_name}`; storage: `{mask(f.storage)}`",
        f"data: `{s['data.name']}`, {sizes['train']:,} training / {sizes['val']:,} validation / "
        f"{sizes['test']:,} test digits (content hash {f.data.content_hash})",
        f"families: {', '.join(f.families)}",
        f"objective: minimise `{OBJECTIVE}`; constraint: `{f.constraint.metric}` ≤ "
        f"{f.constraint.target:g}" + ("" if own == f.constraint else
                                      f" (asked of the report; the study ran with "
                                      f"`{own.metric}` ≤ {own.target:g})"),
        f"budget: {len(f.trials)} trials, {s['train.epochs']} epochs each, batch size "
        f"{s['train.batch_size']}, {s['model.latent']} {s['model.activation']} code units; "
        f"fixed settings: {', '.join(fixed) or 'the defaults'}",
        f"sampler: {tags.get('sampler', unrecorded)}; pruner: {tags.get('pruner', unrecorded)}",
        f"trials: {states['COMPLETE']} complete ({n_feasible} feasible, "
        f"{states['COMPLETE'] - n_feasible} infeasible), {states['PRUNED']} pruned, "
        f"{states['FAIL']} failed" + (f", {states['RUNNING']} running"
                                      if states["RUNNING"] else ""),
        f"confirmation: {len(f.confirmed)} configuration(s) trained again on fresh seeds "
        f"{', '.join(map(str, seeds)) or '–'}; all trials of the search use seed "
        f"{s['train.seed']}",
        f"wall time: {_seconds(span)} from the first trial's start to the last one's end; the "
        f"trials took {_seconds(busy)} in all",
    ]
    if tags.get("git_commit"):
        items.append(f"code: git commit `{tags['git_commit']}`")
    return [Heading("The study"), Bullets(tuple(items))]


def confirmed_table(f: Findings) -> list[Block]:
    out: list[Block] = [Heading("Confirmed configurations")]
    if not f.confirmed:
        return out + [Paragraph("Nothing confirmed on fresh seeds yet:"),
                      Code(f.confirm_command)]
    rows = []
    for c in sorted(f.confirmed, key=lambda c: (f.families.index(family(c.trial)),
                                                c.seeded.mean("val_mse"))):
        mark = " (winner)" if c is f.winner else (" (family winner)" if c in
                                                  f.winners.values() else "")
        rows.append((family(c.trial) + mark, str(c.number), _values(c.config),
                     _f(c.trial.user_attrs["val_mse"]), _pm(c, "val_mse"), _pm(c, "test_mse"),
                     _f(c.seeded.worst("test_mse")), _f(c.seeded.mean("val_mean_activation")),
                     _f(c.seeded.mean("val_l0"), 1), "yes" if c.feasible(f.constraint) else "no"))
    seed = f.spec["train.seed"]
    out += [Paragraph(f"The best feasible trials of each family in the search, trained again "
                      f"on fresh seeds and ranked by their mean validation MSE; a configuration "
                      f"is feasible when its `{f.constraint.metric}` averaged over the seeds "
                      f"meets the target. \"search\" is the trial's own value on seed {seed}."),
            Table(("family", "trial", "values", f"search val MSE (seed {seed})",
                   "val MSE (mean ± sd)", "test MSE (mean ± sd)", "worst test MSE",
                   "mean activation", "L0", "feasible"), tuple(rows))]
    if f.winner is not None:
        commands = [f"# the winner (trial {f.winner.number}, {family(f.winner.trial)}); "
                    f"--set train.seed=N for another seed",
                    shlex.join(["python", "-m", "experiments", "run", "--config",
                                str(f.folder / "best_config.json")])]
        for fam, c in f.winners.items():
            commands += [f"# {fam} (trial {c.number})", reproduce_command(c.config)]
        out += [Paragraph("Train one of them again as a tracked MLflow run (with the study's "
                          "seed, on the same Keras backend, it repeats the trial up to float "
                          "rounding; other seeds land around the confirmed mean):"),
                Code("\n".join(commands))]
    return out


def comparison_table(f: Findings) -> list[Block]:
    rows = (comparison.winner_rows(f.winners, f.winner) + comparison.baseline_rows(f.baselines)
            + comparison.reference_rows(f.references))
    table = Table(("model", "how it was chosen", "val MSE", "test MSE", "test FVU",
                   "mean activation", "L0", "active fraction", "Hoyer"),
                  tuple((r.model, r.chosen, _f(r.val_mse), _f(r.test_mse) + (
                      f" ± {_f(r.test_mse_sd)}" if r.test_mse_sd is not None else ""),
                         _f(r.test["fvu"], 3), _f(r.test["mean_activation"]),
                         _f(r.test["l0"], 1), _f(r.test["active_fraction"], 2),
                         _f(r.test["hoyer"], 2)) for r in rows))
    s = f.spec
    grid = ", ".join(f"{lr:g}" for lr in baselines.lr_grid())
    blocks: list[Block] = [
        Heading("Comparison on the test split"),
        Paragraph(f"All rows are measured on the same {len(f.data.x_test):,} test digits of "
                  f"`{s['data.name']}` (the code measures on their codes). The presets train "
                  f"with everything the trials share: data, epochs ({s['train.epochs']}), batch "
                  f"size, code size ({s['model.latent']}) and activation, loss, optimizer, "
                  f"penalty layers and decoder bound; only their family and penalty weights are "
                  f"the preset's. Their learning rate is chosen from {grid} by the validation "
                  f"MSE on the study's seed, then trained on the winners' fresh seeds (mean ± "
                  f"sd). A model near the mean image has learned nothing.")]
    if not f.baselines:
        blocks.append(Paragraph(f"The baselines are not trained yet: `{f.confirm_command}`"))
    cost = cost_sentence(f)
    return blocks + [table] + ([Paragraph(cost)] if cost else [])


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
        others = [f"{fam} {best[fam].user_attrs[OBJECTIVE] / ref:.2f}×" if fam in best
                  else f"{fam} none that sparse" for fam in penalty]
        parts.append(f"at L0 ≤ {level:g}, topk {_f(ref)} (trial {best[STRUCTURAL].number}, "
                     f"k={best[STRUCTURAL].user_attrs['config'][K]})"
                     + (f"; {', '.join(others)}" if others else ""))
    if not parts:
        return None
    return ("At the same L0, measured on the stored trials (every completed trial, one seed "
            "each: each family's lowest validation MSE among its trials with at most that many "
            "active units per digit, and each penalty family's as a multiple of topk's): "
            + "; ".join(parts) + ".")


def structural(f: Findings) -> list[Block]:
    """topk beside the penalty families: at the same L0 (a sentence and a table), and, under a
    mean-activation target, how its mean activation compares and why."""
    if STRUCTURAL not in f.families:
        return []
    latent = int(f.spec["model.latent"])
    blocks: list[Block] = [Heading("Structural sparsity: topk beside the penalty families")]
    sentence = l0_sentence(f.trials, f.families, latent)
    blocks.append(Paragraph(sentence or "No topk trial completed with L0 at or below "
                            f"{', '.join(map(str, comparison.L0_LEVELS))}: nothing to compare "
                            "at the same L0 yet."))
    rows = []
    for level in (x for x in comparison.L0_LEVELS if x <= latent):
        for fam, t in comparison.best_at_l0(f.trials, f.families, level).items():
            a = t.user_attrs
            rows.append((f"≤ {level:g}", fam, str(t.number), _f(a[OBJECTIVE]),
                         _f(a.get("test_mse")), _f(a["val_l0"], 1),
                         _f(a["val_mean_activation"])))
    if rows:
        blocks.append(Table(("L0", "family", "trial", "val MSE", "test MSE", "val L0",
                             "val mean activation"), tuple(rows)))
    if f.constraint.measure == "mean_activation":
        blocks += _mean_activation_note(f, latent)
    return blocks


def _mean_activation_note(f: Findings, latent: int) -> list[Block]:
    """Why topk's mean activation is not on the penalty families' scale, in numbers."""
    done = completed(f.trials)

    def medians(mine: list[FrozenTrial]) -> tuple[float, float]:
        # the mean decoder-weighted value of an active unit: mean activation × units / L0
        per_unit = [t.user_attrs["val_mean_activation"] * latent / t.user_attrs["val_l0"]
                    for t in mine if t.user_attrs.get("val_l0")]
        return _median([t.user_attrs["val_mean_activation"] for t in mine]), _median(per_unit)

    topk = [t for t in done if family(t) == STRUCTURAL and "val_l0" in t.user_attrs]
    rest = [t for t in done if family(t) != STRUCTURAL and "val_l0" in t.user_attrs]
    if not topk:
        return []
    act, unit = medians(topk)
    met = sum(f.constraint.met(t.user_attrs) for t in topk)
    text = (f"Under this study's target ({f.constraint.describe()}), topk is measured on a "
            f"scale that is not its own: its {len(topk)} completed trials have a median "
            f"validation mean activation of {_f(act)}, and {met} of them meet the target")
    if rest:
        rest_act, rest_unit = medians(rest)
        text += (f"; the penalty families' trials, {_f(rest_act)}. Why: the mean activation "
                 f"counts how large the code is, not how many units are on. An active topk unit "
                 f"has a median decoder-weighted value of {_f(unit, 2)} against the penalty "
                 f"families' {_f(rest_unit, 2)}")
    else:
        text += (f". Why: the mean activation counts how large the code is, not how many "
                 f"units are on; an active topk unit has a median decoder-weighted value of "
                 f"{_f(unit, 2)}")
    norm = DECODER_NORM
    text += (f": nothing penalises a topk unit's size, and its decoder column is held at "
             f"norm {norm:g} (RMS {norm / math.sqrt(784):.2g} over the 784 pixels), so an "
             f"active unit takes the value the reconstruction needs, while the penalties pay "
             f"every unit to stay small. Compare the families on L0 (the right panel of the "
             f"frontier, the table above), or run the study with `--target-l0`.")
    return [Paragraph(text)]


def figures(f: Findings, folder: Path) -> list[Block]:
    """Draw the study's figures into ``folder``/figures and show them, with what to read in
    each; the shown trial's own figures are expected there already."""
    out = folder / "figures"
    done = completed(f.trials)
    n_pruned = sum(t.state == TrialState.PRUNED for t in f.trials)
    marked = {fam: c.trial for fam, c in f.winners.items()} or f.search_best
    plots.frontier(f.trials, f.constraint, f.mean_image.val_mse, marked, out / "frontier.png")
    pruned = f" ({n_pruned} pruned trials stopped early and are not shown)" if n_pruned else ""
    blocks: list[Block] = [Heading("Figures"), Image(
        "figures/frontier.png",
        f"Validation MSE against the decoder-weighted mean activation (left) and against L0, "
        f"the active units per digit (right), of every completed trial{pruned}: one seed each. "
        f"The lines are each family's Pareto front (the lowest MSE at or below that sparsity); "
        f"stars mark the trials of each family's "
        f"{'confirmed winner' if f.winners else 'best feasible trial'}; the dashed line is the "
        f"target, the dotted one the mean image's MSE.")]
    plots.history(f.trials, out / "history.png")
    blocks.append(Image("figures/history.png",
                        "Optimisation history (Optuna): each completed trial's val MSE, "
                        "infeasible trials grey, and the best feasible value so far."))

    def penalised(t: FrozenTrial) -> float:
        return objective_value(t) + max(0.0, f.constraint.violation(t.user_attrs))

    if plots.importances(f.trials, penalised, f"{OBJECTIVE} + excess sparsity measure",
                         out / "importances.png"):
        blocks.append(Image("figures/importances.png",
                            f"Parameter importances (Optuna's PED-ANOVA, conditional parameters "
                            f"included) for the val MSE plus how far the sparsity measure "
                            f"exceeds the target, the constrained objective the pruner also "
                            f"compares; from {len(done)} completed trials (steadier from "
                            f"about 50)."))
    else:
        blocks.append(Paragraph(f"Too few completed trials ({len(done)}) to tell parameter "
                                f"importances (at least {plots.MIN_IMPORTANCE_TRIALS})."))
    for fam in f.families:
        mine = [t for t in done if family(t) == fam]
        if mine:
            plots.slices(mine, FAMILY_PARAMS[fam], f"{fam}: {OBJECTIVE} per parameter",
                         out / f"slice_{fam}.png")
            blocks.append(Image(f"figures/slice_{fam}.png",
                                f"Slice plot (Optuna) of the {len(mine)} completed {fam} "
                                f"trials: val MSE against each searched value, colour = trial "
                                f"number, infeasible grey."))
    what = ("confirmed winner" if f.winner is not None else "search's best feasible trial"
            if f.search_overall is not None else
            "trial closest to the target (no trial is feasible)")
    blocks += [Heading(f"The {what}: trial {f.shown.number} ({family(f.shown)})", 3),
               Paragraph(f"Figures: {f.figure_source}.")]
    blocks += [Image(f"figures/best_{name}.png", f"Trial {f.shown.number}: {caption}.")
               for name, caption in BEST_FIGURES.items()]
    return blocks


def files(f: Findings) -> list[Block]:
    items = ["`report.html`: this page, self-contained; `report.md`: the same, figures in "
             "`figures/`",
             "`summary.json`: the winner, its confirmation and the baselines, for programs",
             "`trials.csv`: one row per trial (params, measures, state, constraint, MLflow run)"]
    if f.winner is not None or f.search_overall is not None:
        items.append("`best_config.json`: the flat config of the "
                     + ("confirmed winner" if f.winner else "search's best feasible trial"))
    if f.registered:
        items.append(f"MLflow Model Registry: `models:/{f.registered}`, the confirmed winner's "
                     f"model (`mlflow.keras.load_model`)")
    if f.tags is not None:
        from tracking.ui import experiment_links

        link = dict(experiment_links(f.uri, UI_BASE))[f.study_name]
        items += [f"MLflow: experiment `{f.study_name}` in `{f.uri}`, parent run `{f.parent}` "
                  f"(this report is logged to it under `report/`), one child run per trial "
                  f"and per confirmation seed",
                  f"`make ui` serves it at {link}",
                  f"its feasible trials, lowest `{OBJECTIVE}` first: {feasible_first(link)}"]
    return [Heading("Files"), Bullets(tuple(items))]


def feasible_first(link: str) -> str:
    """A model-training-view link narrowed to the feasible trials, best first (the search
    filter and sort the README explains; the UI reads them from the URL)."""
    query = urllib.parse.urlencode({"searchFilter": f"tags.{FEASIBLE_TAG} = 'true'",
                                    "orderByKey": f"metrics.`{OBJECTIVE}`", "orderByAsc": "true"},
                                   quote_via=urllib.parse.quote)
    return f"{link}&{query}"


def page(f: Findings, folder: Path) -> list[Block]:
    """Every section, in reading order."""
    return (summary(f) + warnings(f) + the_study(f) + confirmed_table(f) + comparison_table(f)
            + structural(f) + figures(f, folder) + files(f))
