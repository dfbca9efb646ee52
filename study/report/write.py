"""The study report: what a study found, as a folder a person can read, share and act on.

    python -m study report [--study-name S] [--storage URL] [--out DIR] [--tracking-uri URI]

Reads the study from its Optuna storage (by default the study whose latest trial started last)
and its trial runs from MLflow, trains the comparison baselines on the study's data and budget,
and writes ``reports/<study>/``: ``report.html`` (one self-contained page), ``report.md`` (the
same, figures beside it in ``figures/``), ``best_config.json`` (``python -m experiments run
--config`` retrains it) and ``trials.csv``. The folder is built beside its destination and
renamed into place, so a failure leaves nothing half-written; it is then logged to the study's
parent MLflow run under ``report/``.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import shutil
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from experiments.config import from_flat
from experiments.data import Dataset
from study import baselines, confirm
from study.report import comparison, plots, sections
from study.report.document import html_page, markdown
from study.results import (
    SEEDS,
    TOP,
    Constraint,
    best_feasible,
    best_per_family,
    closest_infeasible,
    family,
    feasible,
)
from study.runner import SPEC_ATTR, stored_spec
from study.storage import check_url, mask, open_storage
from study.tracking import PARENT_ATTR
from study.workers import FAIL_REASON
from tracking import artifacts
from tracking.runs import Tracker
from tracking.store import tracking_uri

REPORTS = Path("reports")


class ReportError(ValueError):
    """A report that cannot be made as asked; the CLI prints it in one line and exits 2."""


@dataclass(frozen=True)
class Written:
    folder: Path
    best: FrozenTrial | None  # the confirmed winner's trial, else the search's best
    logged_to: str | None  # the parent run id the folder was logged to
    to_confirm: str | None  # the command that confirms what is not confirmed yet


def _existing_storage(url: str) -> optuna.storages.BaseStorage:
    """Open a storage that must already exist: a report never creates one."""
    check_url(url)
    path = (url.removeprefix("journal:") if url.startswith("journal:") else
            url.split(":///", 1)[1] if url.startswith("sqlite") else None)
    if path is not None and not Path(path).is_file():
        raise ReportError(f"no study storage at {path}; pass the --storage the study ran with")
    return open_storage(url)


def latest_study(storage: optuna.storages.BaseStorage) -> str:
    """The name of the study whose latest trial started most recently (the newest study
    when none has started a trial)."""
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    if not summaries:
        raise ReportError("the storage holds no study")

    def latest(i_summary):
        i, summary = i_summary
        trials = optuna.load_study(study_name=summary.study_name,
                                   storage=storage).get_trials(deepcopy=False)
        starts = [t.datetime_start for t in trials if t.datetime_start is not None]
        return max(starts, default=datetime.min), i

    return max(enumerate(summaries), key=latest)[1].study_name


def load_study(storage_url: str, name: str | None) -> optuna.Study:
    """The study to report on; ReportError when it is missing or has no completed trial."""
    storage = _existing_storage(storage_url)
    name = name if name is not None else latest_study(storage)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = [repr(s.study_name) for s in optuna.get_all_study_summaries(storage, False)]
        listed = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if known[10:] else "")
        raise ReportError(f"no study {name!r} in {mask(storage_url)}; it holds: "
                          f"{listed or 'no study'}") from None
    if SPEC_ATTR not in study.user_attrs:
        raise ReportError(f"study {name!r} was not made by `python -m study run` "
                          f"(it has no {SPEC_ATTR!r} attribute)")
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    if not states["COMPLETE"]:
        seen = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "no trials"
        raise ReportError(f"study {name!r} has no completed trial yet ({seen}); "
                          f"run more trials first")
    return study


def report_folder(study_name: str, out: str | None, other: Constraint | None = None) -> Path:
    """``--out``, else reports/<study name made safe for a path>, with the constraint's measure
    and target when they are not the study's own."""
    if out:
        return Path(out)
    name = study_name + (f"--{other.measure}-{other.target:g}" if other else "")
    return REPORTS / re.sub(r"[^A-Za-z0-9._+-]+", "_", name)


def _stage(dest: Path) -> Path:
    """A new empty folder beside ``dest`` to build the report in."""
    if dest.exists() and not (dest.is_dir() and (not any(dest.iterdir())
                                                 or (dest / "report.md").is_file())):
        raise ReportError(f"{dest} exists and is not a report folder; pick another --out")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # mkdir, not mkdtemp: its mode is the user's umask's, as the report's should be (mkdtemp's
        # 0700 would make the report private)
        stage = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}"
        stage.mkdir()
        return stage
    except OSError as err:
        raise ReportError(f"cannot write the report to {dest}: "
                          f"{err.strerror or err}") from None


def _move_into_place(stage: Path, dest: Path) -> None:
    old = None
    if dest.exists():
        old = dest.with_name(f"{stage.name}.old")
        dest.rename(old)
    stage.rename(dest)
    if old is not None:
        shutil.rmtree(old)


def _cell(value: object) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def trials_csv(trials: list[FrozenTrial]) -> str:
    """One row per trial: state, family, params, measures, constraint, timing, MLflow run id."""
    params = sorted({k for t in trials for k in t.params})
    measures = sorted({k for t in trials for k, v in t.user_attrs.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)})
    fields = ["number", "state", "fail_reason", "family", "value", "constraint", "feasible",
              *params,
              *measures, "last_step", "last_reported", "datetime_start", "datetime_complete",
              "duration_s", "mlflow_run_id"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for t in trials:
        constraint = next(iter(t.constraints.values())) if t.constraints else None
        writer.writerow({
            "number": t.number, "state": t.state.name,
            "fail_reason": t.user_attrs.get(FAIL_REASON, ""),
            "family": family(t),
            "value": repr(t.value) if t.state == TrialState.COMPLETE else "",
            "constraint": "" if constraint is None else repr(constraint),
            "feasible": str(feasible(t)).lower() if t.constraints else "",
            **{k: _cell(t.params.get(k)) for k in params},
            **{k: _cell(t.user_attrs.get(k)) for k in measures},
            "last_step": _cell(t.last_step),
            # what the pruner compared at that step (see Objective.pruning_value)
            "last_reported": _cell(None if t.last_step is None
                                   else t.intermediate_values.get(t.last_step)),
            "datetime_start": t.datetime_start.isoformat() if t.datetime_start else "",
            "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else "",
            "duration_s": f"{t.duration.total_seconds():.2f}" if t.duration else "",
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id", ""),
        })
    return buffer.getvalue()


def _best_figures(trial: FrozenTrial, run_id: str | None, uri: str, data: Dataset,
                  folder: Path, say) -> str:
    """Put figures/best_<name>.png of ``trial`` into ``folder``: the charts of ``run_id`` (the
    winner's median confirmation seed, drawn when it was recorded), else drawn now from the
    model saved in the trial's own run (which holds bare pictures), else from a retraining of
    its config; returns where they came from."""
    names = tuple(sections.BEST_FIGURES)
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
            files = [f for f in artifacts.download(uri, own, MODEL_DIR, tmp)
                     if f.name == MODEL_FILE]
            if files:
                model = keras.saving.load_model(files[0])
                source = f"drawn from the model saved in its MLflow run `{own}`"
    if model is None:
        say(f"trial {trial.number} has no model in MLflow: retraining its config to draw "
            f"its figures")
        model = train_and_evaluate(cfg, data).model
        source = "redrawn from a retraining of its config (its run's model is not in MLflow)"
    for name, fig in draw(model, data, cfg, names).items():
        fig.savefig(folder / "figures" / f"best_{name}.png", dpi=plots.DPI)
    return source


def confirm_command(study: optuna.Study, storage_url: str, uri: str,
                    constraint: Constraint, top: int, seeds: int) -> str:
    """The command that confirms the candidates of ``constraint`` and trains the baselines."""
    option = {"mean_activation": "--target", "l0": "--target-l0",
              "raw_activation": "--target-raw"}[constraint.measure]
    return shlex.join(["python", "-m", "study", "confirm", "--study-name", study.study_name,
                       "--storage", mask(storage_url), "--tracking-uri", mask(uri), option,
                       f"{constraint.target:g}", "--confirm-top", str(top), "--confirm-seeds",
                       str(seeds)])


def gather(study: optuna.Study, storage_url: str, uri: str, parent: str | None,
           tags: dict[str, str] | None, data: Dataset, constraint: Constraint, dest: Path,
           folder: Path, say=print) -> sections.Findings:
    """Everything the report shows, from what the study stored; the shown trial's figures are
    put into ``folder``/figures."""
    spec = study.user_attrs[SPEC_ATTR]
    families = spec["families"].split(",")
    trials = study.get_trials(deepcopy=False)
    found = confirm.stored(study, trials)
    seeds = _confirmation_seeds(found, study)
    top = int(study.user_attrs.get(confirm.TOP_ATTR, TOP))
    chosen = confirm.candidates(trials, families, constraint, top)
    on_seeds = {n: c for n, c in found.items() if c.seeded.seeds == seeds}
    winners = confirm.winners(on_seeds, families, constraint, among=chosen)
    winner = confirm.overall(winners)
    search_best = best_per_family(trials, families, constraint)
    search_overall = best_feasible(trials, constraint)
    shown = (winner.trial if winner else search_overall
             or closest_infeasible(trials, constraint))
    if shown is None:  # load_study refuses a study without a completed trial
        raise ReportError(f"study {study.study_name!r} has no completed trial")
    run_id = winner.run_ids[winner.median_seed()] if winner and winner.run_ids else None
    (folder / "figures").mkdir()
    return sections.Findings(
        study_name=study.study_name, storage=storage_url, spec=spec, constraint=constraint,
        trials=trials, search_best=search_best, search_overall=search_overall,
        confirmed=[on_seeds[t.number] for t in chosen if t.number in on_seeds],
        winners=winners, winner=winner,
        unconfirmed=[t for t in chosen if t.number not in on_seeds],
        confirm_command=confirm_command(study, storage_url, uri, constraint, top,
                                        len(seeds) or SEEDS),
        baselines=baselines.stored(study, seeds or None),
        references=baselines.references(data, int(spec["model.latent"]),
                                        int(spec["data.seed"])),
        shown=shown, figure_source=_best_figures(shown, run_id, uri, data, folder, say),
        data=data, uri=uri, tags=tags, parent=parent, folder=dest,
        registered=_registered(uri, study.study_name, winner) if tags is not None else None)


def _confirmation_seeds(found: dict[int, confirm.Confirmed], study: optuna.Study
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
    return find_version(uri, study_name, {"trial": str(winner.number),
                                          "seeds": ",".join(map(str, winner.seeded.seeds))})


def summary_json(f: sections.Findings) -> dict:
    """The machine-readable summary: the winner (config, search and confirmed figures), each
    family's, the baselines, the references and the cost of sparsity."""
    def confirmed(c: confirm.Confirmed) -> dict:
        s, a = c.seeded, c.trial.user_attrs
        return {
            "trial": c.number, "family": family(c.trial), "config": c.config,
            "search": {"seed": c.config["train.seed"], "val_mse": a["val_mse"],
                       "test_mse": a["test_mse"], "mean_activation": a["val_mean_activation"],
                       "l0": a.get("val_l0")},
            "confirmed": {"seeds": list(s.seeds),
                          **{f"{k}_{stat}": getattr(s, stat)(k) for k in
                             ("val_mse", "test_mse") for stat in ("mean", "sd", "worst")},
                          "mean_activation_mean": s.mean("val_mean_activation"),
                          "mean_activation_worst": s.worst("val_mean_activation"),
                          "l0_mean": s.mean("val_l0"), "test_fvu_mean": s.mean("test_fvu"),
                          "decoder_norm_median_mean": s.mean("decoder_norm_median")},
        }

    def baseline(b: baselines.Baseline) -> dict:
        s = b.seeded
        ok = all(s.finals)
        return {"name": b.name, "description": b.description, "learning_rate": b.learning_rate,
                "learning_rates_tried": [lr for lr, _ in b.grid], "seeds": list(s.seeds),
                "test_mse_mean": s.mean("test_mse") if ok else None,
                "test_mse_sd": s.sd("test_mse") if ok else None,
                "val_mse_mean": s.mean("val_mse") if ok else None,
                "mean_activation_mean": s.mean("val_mean_activation") if ok else None,
                "l0_mean": s.mean("val_l0") if ok else None}

    states = Counter(t.state.name for t in f.trials)
    return {
        "study": f.study_name, "storage": mask(f.storage), "data": f.spec["data.name"],
        "constraint": {"measure": f.constraint.measure, "metric": f.constraint.metric,
                       "target": f.constraint.target},
        "trials": {"complete": states["COMPLETE"], "pruned": states["PRUNED"],
                   "failed": states["FAIL"],
                   "feasible": sum(feasible(t, f.constraint) for t in f.trials
                                   if t.state == TrialState.COMPLETE)},
        "winner": confirmed(f.winner) if f.winner else None,
        "families": {fam: confirmed(c) for fam, c in f.winners.items()},
        "unconfirmed_candidates": [t.number for t in f.unconfirmed],
        "baselines": [baseline(b) for b in f.baselines.values()],
        "references": [{"name": r.name, "val_mse": r.val_mse, "test_mse": r.test_mse,
                        "test_fvu": r.test_fvu} for r in f.references],
        "cost_of_sparsity": comparison.cost(f.winner, f.baselines, f.references),
        "registered_model": f"models:/{f.registered}" if f.registered else None,
    }


def build(study: optuna.Study, storage_url: str, uri: str, parent: str | None,
          tags: dict[str, str] | None, data: Dataset, constraint: Constraint, dest: Path,
          folder: Path, say=print) -> sections.Findings:
    """Write the report's files into ``folder`` (to be moved to ``dest``)."""
    say(f"report on study {study.study_name!r}: {len(study.get_trials(deepcopy=False))} "
        f"trials, {constraint.describe()}")
    f = gather(study, storage_url, uri, parent, tags, data, constraint, dest, folder, say)
    blocks = sections.page(f, folder)
    title = f"Study {study.study_name}"
    (folder / "report.md").write_text(markdown(title, blocks))
    (folder / "report.html").write_text(html_page(title, blocks, folder))
    (folder / "trials.csv").write_text(trials_csv(f.trials))
    (folder / "summary.json").write_text(json.dumps(summary_json(f), indent=2) + "\n")
    best = f.winner.config if f.winner else (f.search_overall.user_attrs["config"]
                                             if f.search_overall else None)
    if best is not None:
        (folder / "best_config.json").write_text(from_flat(best).to_json() + "\n")
    return f


def open_tracking(study: optuna.Study, uri: str | None, data: Dataset
                  ) -> confirm.Recorder | None:
    """Where the study's MLflow runs are (None when it ran without MLflow); ReportError when
    they are not in the store at ``uri``."""
    uri = tracking_uri(uri)
    parent = study.user_attrs.get(PARENT_ATTR)
    if parent is None:
        return None
    _parent_tags(study, uri, parent)
    tracker = Tracker(study.study_name, uri)
    return confirm.Recorder(tracker, tracker.run(parent), study.study_name, data)


def _parent_tags(study: optuna.Study, uri: str, parent: str) -> dict[str, str]:
    try:
        tags = artifacts.run_tags(uri, parent)
    except Exception as err:  # an unreachable server, a broken store: one line for the user
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ReportError(f"cannot read the study's MLflow runs from {uri}: "
                          f"{first[:300]}") from err
    if tags is None:
        raise ReportError(f"the MLflow runs of study {study.study_name!r} are not in {uri}; "
                          f"pass the --tracking-uri it ran with")
    return tags


def write(storage_url: str, name: str | None = None, out: str | None = None,
          uri: str | None = None, target: tuple[str, float] | None = None,
          say=print) -> Written:
    """Check everything, build the report beside its folder, move it into place and log it to
    the study's parent MLflow run. ``target`` (measure, value) asks for another constraint
    than the study's: its winners come from the stored trials, nothing is trained."""
    from experiments import data as data_module

    study = load_study(storage_url, name)
    uri = tracking_uri(uri)
    parent = study.user_attrs.get(PARENT_ATTR)
    tags = _parent_tags(study, uri, parent) if parent is not None else None
    spec = stored_spec(study, target)
    data = data_module.load(spec.base.data.name, spec.base.data.val_fraction,
                            spec.base.data.seed)
    own = target is None or Constraint.of(study.user_attrs[SPEC_ATTR]) == spec.constraint
    dest = report_folder(study.study_name, out, None if own else spec.constraint)
    stage = _stage(dest)
    try:
        f = build(study, storage_url, uri, parent, tags, data, spec.constraint, dest, stage,
                  say)
        _move_into_place(stage, dest)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if parent is not None:
        artifacts.log_folder(uri, parent, dest, "report" if own else f"report/{dest.name}")
    return Written(dest, f.winner.trial if f.winner else f.search_overall, parent,
                   f.confirm_command if f.unconfirmed or not f.winner else None)
