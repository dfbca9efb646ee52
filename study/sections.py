"""The report's sections, as document blocks: summary and warnings, the study, the best
configuration per family, the comparison table, the figures (drawn here into the report's
figures/ folder) and the files. Numbers come from what Optuna stored for the trials; nothing is
recomputed but the baselines (study/comparison.py).
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
from study import plots
from study.comparison import Row, trial_rows
from study.document import Block, Bullets, Code, Heading, Image, Paragraph, Table, Warn
from study.objective import CONSTRAINT, OBJECTIVE
from study.runner import feasible
from study.space import FAMILY_PARAMS, RANGES, near_edge
from study.storage import mask

BEST_FIGURES = {  # figures of the best trial's run, and what to look for in them
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
    spec: dict  # the study's spec user attr: families, target and the fixed flat config
    trials: list[FrozenTrial]
    best: dict[str, FrozenTrial]  # best feasible trial per family that has one
    overall: FrozenTrial | None  # best feasible trial of all
    shown: FrozenTrial  # whose figures are shown: the overall best, else the closest
    figure_source: str  # where the shown trial's figures came from
    data: Dataset
    baselines: list[Row]  # comparison rows; the last is the mean image
    uri: str  # MLflow tracking URI
    tags: dict[str, str] | None  # the parent run's tags; None without MLflow
    parent: str | None  # the parent run id
    folder: Path  # where the report will be

    @property
    def target(self) -> float:
        return float(self.spec["target"])

    @property
    def families(self) -> list[str]:
        return self.spec["families"].split(",")


def family(t: FrozenTrial) -> str:
    return t.user_attrs["config"]["model.family"]


def _f(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _seconds(s: float) -> str:
    return f"{s:.0f} s" + (f" ({s / 60:.1f} min)" if s >= 120 else "")


def _values(t: FrozenTrial) -> str:
    config = t.user_attrs["config"]
    return ", ".join(f"{k.split('.')[-1]}={config[k]:.3g}" for k in FAMILY_PARAMS[family(t)])


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


def summary(f: Findings) -> list[Block]:
    if f.overall is None:
        return [Paragraph(f"No trial met the target (mean activation ≤ {f.target:g}); the "
                          f"closest is trial {f.shown.number} at "
                          f"{_f(f.shown.user_attrs[CONSTRAINT])}.")]
    a = f.overall.user_attrs
    return [Paragraph(f"Best feasible: trial {f.overall.number} ({family(f.overall)}), val MSE "
                      f"{_f(a['val_mse'])}, test MSE {_f(a['test_mse'])}, mean activation "
                      f"{_f(a['val_mean_activation'])} (target {f.target:g}), active fraction "
                      f"{_f(a['val_active_fraction'], 2)}, Hoyer {_f(a['val_hoyer'], 2)}.")]


def warnings(f: Findings) -> list[Block]:
    """Edges of the search space, best trials that learned nothing or whose code is mostly dead,
    and the relu scale loophole when the study left it open."""
    lines = edge_warnings(f.best)
    mean_image = f.baselines[-1].val_mse
    latent = int(f.spec["model.latent"])
    for fam, t in f.best.items():
        a = t.user_attrs
        if a["val_mse"] >= LEARNED_NOTHING * mean_image:
            lines.append(f"{fam}: the best feasible trial ({t.number}) reconstructs no better "
                         f"than the mean training image (val MSE {a['val_mse']:.4f} vs "
                         f"{mean_image:.4f}): it met the target by learning nothing")
        dead = int(a.get("val_dead_units", 0))
        if dead >= latent / 2:
            lines.append(f"{fam}: {dead} of the {latent} code units of trial {t.number} are "
                         f"dead (never active on the validation split)")
    s = f.spec
    if (s.get("model.activation") == "relu" and s.get("model.penalty_layers") == "encoder"
            and not s.get("model.decoder_norm")):
        lines.append("relu codes with decay on the encoder only and no `model.decoder_norm`: a "
                     "code can meet the mean-activation target by shrinking while the decoder "
                     "grows; judge sparsity by the active fraction and Hoyer columns")
    return [Heading("Warnings"), *map(Warn, lines)] if lines else []


def the_study(f: Findings) -> list[Block]:
    states = Counter(t.state.name for t in f.trials)
    n_feasible = sum(t.state == TrialState.COMPLETE and feasible(t) for t in f.trials)
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
    items = [
        f"name: `{f.study_name}`; storage: `{mask(f.storage)}`",
        f"data: `{s['data.name']}`, {sizes['train']:,} training / {sizes['val']:,} validation / "
        f"{sizes['test']:,} test digits (content hash {f.data.content_hash})",
        f"families: {', '.join(f.families)}",
        f"objective: minimise `{OBJECTIVE}`; constraint: `{CONSTRAINT}` ≤ target {f.target:g}",
        f"budget: {len(f.trials)} trials, {s['train.epochs']} epochs each, batch size "
        f"{s['train.batch_size']}, {s['model.latent']} {s['model.activation']} code units; "
        f"fixed settings: {', '.join(fixed) or 'the defaults'}",
        f"sampler: {tags.get('sampler', unrecorded)}; pruner: {tags.get('pruner', unrecorded)}",
        f"trials: {states['COMPLETE']} complete ({n_feasible} feasible, "
        f"{states['COMPLETE'] - n_feasible} infeasible), {states['PRUNED']} pruned, "
        f"{states['FAIL']} failed" + (f", {states['RUNNING']} running"
                                      if states["RUNNING"] else ""),
        f"wall time: {_seconds(span)} from the first trial's start to the last one's end; the "
        f"trials took {_seconds(busy)} in all",
    ]
    if tags.get("git_commit"):
        items.append(f"code: git commit `{tags['git_commit']}`")
    return [Heading("The study"), Bullets(tuple(items))]


def best_configurations(f: Findings) -> list[Block]:
    out: list[Block] = [Heading("Best feasible configuration per family")]
    if f.overall is None:
        return out + [Paragraph("No trial met the target, so there is no best configuration and "
                                "no best_config.json.")]
    rows = tuple((fam + (" (best overall)" if t is f.overall else ""), str(t.number),
                  _values(t), _f(t.user_attrs["val_mse"]), _f(t.user_attrs["test_mse"]),
                  _f(t.user_attrs["val_mean_activation"]),
                  _f(t.user_attrs["val_active_fraction"], 2), _f(t.user_attrs["val_hoyer"], 2))
                 for fam, t in f.best.items())
    out.append(Table(("family", "trial", "values", "val MSE", "test MSE",
                      "mean activation (val)", "active fraction (val)", "Hoyer (val)"), rows))
    missing = [fam for fam in f.families if fam not in f.best]
    if missing:
        out.append(Paragraph(f"No feasible trial in: {', '.join(missing)}."))
    commands = [f"# best overall (trial {f.overall.number}, {family(f.overall)})",
                shlex.join(["python", "-m", "experiments", "run", "--config",
                            str(f.folder / "best_config.json")])]
    for fam, t in f.best.items():
        commands += [f"# best {fam} (trial {t.number})", reproduce_command(t.user_attrs["config"])]
    return out + [Paragraph("Train one of them again as a tracked MLflow run (seeded: on the same "
                            "Keras backend it repeats the trial's numbers, up to float "
                            "rounding):"),
                  Code("\n".join(commands))]


def comparison(f: Findings) -> list[Block]:
    rows = trial_rows(f.best, f.overall) + f.baselines
    table = Table(("model", "how it was chosen", "val MSE", "test MSE", "mean activation",
                   "active fraction", "Hoyer"),
                  tuple((r.model, r.chosen, _f(r.val_mse), _f(r.test["mse"]),
                         _f(r.test["mean_activation"]), _f(r.test["active_fraction"], 2),
                         _f(r.test["hoyer"], 2)) for r in rows))
    s = f.spec
    return [Heading("Comparison on the test split"),
            Paragraph(f"All rows are measured on the same {len(f.data.x_test):,} test digits of "
                      f"`{s['data.name']}` (the sparsity measures on their codes). The presets "
                      f"are trained with the study's data, seed, epochs ({s['train.epochs']}), "
                      f"batch size and code size ({s['model.latent']}); every other setting is "
                      f"the preset's. A model near the mean image has learned nothing."),
            table]


def figures(f: Findings, folder: Path) -> list[Block]:
    """Draw the study's figures into ``folder``/figures and show them, with what to read in
    each; the shown trial's own figures are expected there already."""
    out = folder / "figures"
    done = [t for t in f.trials if t.state == TrialState.COMPLETE]
    n_pruned = sum(t.state == TrialState.PRUNED for t in f.trials)
    blocks: list[Block] = [Heading("Figures")]
    plots.tradeoff(f.trials, f.target, f.baselines[-1].val_mse, f.overall, out / "tradeoff.png")
    pruned = f" ({n_pruned} pruned trials stopped early and are not shown)" if n_pruned else ""
    blocks.append(Image("figures/tradeoff.png",
                        f"Validation MSE against validation mean activation of every completed "
                        f"trial{pruned}. Left of the green line is feasible (filled), right of it "
                        f"infeasible (hollow); the dotted line is the mean image's MSE."))
    plots.history(f.trials, out / "history.png")
    blocks.append(Image("figures/history.png",
                        "Optimisation history (Optuna): each completed trial's val MSE, "
                        "infeasible trials grey, and the best feasible value so far."))

    def penalised(t: FrozenTrial) -> float:
        return t.value + max(0.0, t.user_attrs[CONSTRAINT] - f.target)

    if plots.importances(f.trials, penalised, f"{OBJECTIVE} + excess activation",
                         out / "importances.png"):
        blocks.append(Image("figures/importances.png",
                            f"Parameter importances (Optuna's PED-ANOVA, conditional parameters "
                            f"included) for the val MSE plus how far the mean activation exceeds "
                            f"the target, the constrained objective the pruner also compares; "
                            f"from {len(done)} completed trials (steadier from about 50)."))
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
    what = ("best feasible trial" if f.overall is not None else
            "trial closest to the target (no trial is feasible)")
    blocks += [Heading(f"The {what}: trial {f.shown.number} ({family(f.shown)})", 3),
               Paragraph(f"Figures: {f.figure_source}.")]
    blocks += [Image(f"figures/best_{name}.png", f"Trial {f.shown.number}: {caption}.")
               for name, caption in BEST_FIGURES.items()]
    return blocks


def files(f: Findings) -> list[Block]:
    items = ["`report.html`: this page, self-contained; `report.md`: the same, figures in "
             "`figures/`",
             "`trials.csv`: one row per trial (params, measures, state, constraint, MLflow run)"]
    if f.overall is not None:
        items.append("`best_config.json`: the flat config of the best feasible trial")
    if f.tags is not None:
        from tracking.ui import experiment_links

        link = dict(experiment_links(f.uri, UI_BASE))[f.study_name]
        items += [f"MLflow: experiment `{f.study_name}` in `{f.uri}`, parent run `{f.parent}` "
                  f"(this report is logged to it under `report/`), one child run per trial",
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
    return (summary(f) + warnings(f) + the_study(f) + best_configurations(f) + comparison(f)
            + figures(f, folder) + files(f))
