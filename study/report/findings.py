"""What the report shows, gathered once: the study's trials and confirmations from Optuna's
storage, the baselines and references, the registered model, and the shown trial's figures (from
its MLflow run, else drawn from its saved model, else from a retraining of its config)."""

from __future__ import annotations

import shlex
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from experiments.config import from_flat
from experiments.data import Dataset
from study import baselines, confirm
from study.baselines import Baseline, Reference
from study.confirm import Confirmed
from study.report import ReportError, plots
from study.results import (
    SEEDS,
    SPEC_ATTR,
    TOP,
    Constraint,
    best_feasible,
    best_per_family,
    closest_infeasible,
)
from study.storage import mask
from tracking import artifacts

BEST_FIGURES = {  # figures of the winner's run, and what to look for in them
    "reconstruction": "test images (top) over their reconstructions",
    "receptive_fields": "encoder weights of each code unit (red +, blue −)",
    "activations": "its code activations on the test split: how sparse, how many units dead",
}


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
    diverged: list[int]  # candidates whose training diverged on one of those seeds
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


def confirm_command(
    study: optuna.Study, storage_url: str, uri: str, constraint: Constraint, top: int, seeds: int
) -> str:
    """The command that confirms the candidates of ``constraint`` and trains the baselines."""
    option = {"mean_activation": "--target", "l0": "--target-l0", "raw_activation": "--target-raw"}[
        constraint.measure
    ]
    return shlex.join(
        [
            "python",
            "-m",
            "study",
            "confirm",
            "--study-name",
            study.study_name,
            "--storage",
            mask(storage_url),
            "--tracking-uri",
            mask(uri),
            option,
            f"{constraint.target:g}",
            "--confirm-top",
            str(top),
            "--confirm-seeds",
            str(seeds),
        ]
    )


def gather(
    study: optuna.Study,
    storage_url: str,
    uri: str,
    parent: str | None,
    tags: dict[str, str] | None,
    data: Dataset,
    constraint: Constraint,
    dest: Path,
    folder: Path,
    say=print,
) -> Findings:
    """Everything the report shows, from what the study stored; the shown trial's figures are
    put into ``folder``/figures."""
    spec = study.user_attrs[SPEC_ATTR]
    families = spec["families"].split(",")
    trials = study.get_trials(deepcopy=False)
    found = confirm.stored(study, trials)
    seeds = _confirmation_seeds(found, study)
    top = int(study.user_attrs.get(confirm.TOP_ATTR, TOP))
    on_seeds = {n: c for n, c in found.items() if c.seeded.seeds == seeds}
    diverged = confirm.diverged(study, seeds)
    chosen = confirm.candidates(trials, families, constraint, top, on_seeds, diverged)
    winners = confirm.winners(on_seeds, families, constraint, among=chosen)
    winner = confirm.overall(winners)
    search_best = best_per_family(trials, families, constraint)
    search_overall = best_feasible(trials, constraint)
    shown = winner.trial if winner else search_overall or closest_infeasible(trials, constraint)
    if shown is None:  # load_study refuses a study without a completed trial
        raise ReportError(f"study {study.study_name!r} has no completed trial")
    run_id = winner.run_ids[winner.median_seed()] if winner and winner.run_ids else None
    (folder / "figures").mkdir()
    return Findings(
        study_name=study.study_name,
        storage=storage_url,
        spec=spec,
        constraint=constraint,
        trials=trials,
        search_best=search_best,
        search_overall=search_overall,
        confirmed=[on_seeds[t.number] for t in chosen if t.number in on_seeds],
        winners=winners,
        winner=winner,
        unconfirmed=[t for t in chosen if t.number not in on_seeds and t.number not in diverged],
        diverged=[t.number for t in chosen if t.number in diverged],
        confirm_command=confirm_command(
            study, storage_url, uri, constraint, top, len(seeds) or SEEDS
        ),
        baselines=baselines.stored(study, seeds or None),
        references=baselines.references(data, int(spec["model.latent"]), int(spec["data.seed"])),
        shown=shown,
        figure_source=_best_figures(shown, run_id, uri, data, folder, say),
        data=data,
        uri=uri,
        tags=tags,
        parent=parent,
        folder=dest,
        registered=_registered(uri, study.study_name, winner) if tags is not None else None,
    )


def _confirmation_seeds(
    found: dict[int, confirm.Confirmed], study: optuna.Study
) -> tuple[int, ...]:
    """The seeds of the study's confirmations: those most of them used (a study confirmed
    again with other --confirm-seeds has both)."""
    counts = Counter(c.seeded.seeds for c in found.values())
    counts.update(b.seeded.seeds for b in baselines.stored(study).values())
    return counts.most_common(1)[0][0] if counts else ()


def _registered(uri: str, study_name: str, winner: confirm.Confirmed | None) -> str | None:
    """The Model Registry version of ``winner``, if it was registered."""
    from tracking.registry import find_version

    if winner is None:
        return None
    return find_version(
        uri,
        study_name,
        {"trial": str(winner.number), "seeds": ",".join(map(str, winner.seeded.seeds))},
    )


def _best_figures(
    trial: FrozenTrial, run_id: str | None, uri: str, data: Dataset, folder: Path, say
) -> str:
    """Put figures/best_<name>.png of ``trial`` into ``folder``: the charts of ``run_id`` (the
    winner's median confirmation seed, drawn when it was recorded), else drawn now from the
    model saved in the trial's own run (which holds bare pictures), else from a retraining of
    its config; returns where they came from."""
    names = tuple(BEST_FIGURES)
    if run_id:
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            found = {p.stem: p for p in artifacts.download(uri, run_id, "figures", tmp)}
            if all(name in found for name in names):
                for name in names:
                    shutil.copyfile(found[name], folder / "figures" / f"best_{name}.png")
                return f"artefacts of its MLflow run `{run_id}`"
    from experiments.runner import MODEL_DIR, MODEL_FILE, draw, train_and_evaluate

    cfg = from_flat(trial.user_attrs["config"])
    own = trial.user_attrs.get("mlflow_run_id")
    model, source = None, ""
    if own:
        import keras

        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            files = [
                f for f in artifacts.download(uri, own, MODEL_DIR, tmp) if f.name == MODEL_FILE
            ]
            if files:
                model = keras.saving.load_model(files[0])
                source = f"drawn from the model saved in its MLflow run `{own}`"
    if model is None:
        say(
            f"trial {trial.number} has no model in MLflow: retraining its config to draw "
            f"its figures"
        )
        model = train_and_evaluate(cfg, data).model
        source = "redrawn from a retraining of its config (its run's model is not in MLflow)"
    for name, fig in draw(model, data, cfg, names).items():
        fig.savefig(folder / "figures" / f"best_{name}.png", dpi=plots.DPI)
    return source
