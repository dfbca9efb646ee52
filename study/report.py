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
import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from experiments.config import from_flat
from experiments.data import Dataset
from study import plots, sections
from study.comparison import baseline_rows
from study.document import html_page, markdown
from study.objective import CONSTRAINT_KEY
from study.runner import SPEC_ATTR, best_feasible, closest_infeasible, feasible
from study.storage import check_url, mask, open_storage
from study.tracking import PARENT_ATTR
from study.workers import FAIL_REASON
from tracking import artifacts
from tracking.runs import tracking_uri

REPORTS = Path("reports")


class ReportError(ValueError):
    """A report that cannot be made as asked; the CLI prints it in one line and exits 2."""


@dataclass(frozen=True)
class Written:
    folder: Path
    best: FrozenTrial | None
    logged_to: str | None  # the parent run id the folder was logged to


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


def report_folder(study_name: str, out: str | None) -> Path:
    """``--out``, else reports/<study name made safe for a path>."""
    return Path(out) if out else REPORTS / re.sub(r"[^A-Za-z0-9._+-]+", "_", study_name)


def _stage(dest: Path) -> Path:
    """A new empty folder beside ``dest`` to build the report in."""
    if dest.exists() and not (dest.is_dir() and (not any(dest.iterdir())
                                                 or (dest / "report.md").is_file())):
        raise ReportError(f"{dest} exists and is not a report folder; pick another --out")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        stage.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would make the report private
        return stage
    except OSError as err:
        raise ReportError(f"cannot write the report to {dest}: "
                          f"{err.strerror or err}") from None


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


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
        constraint = t.constraints.get(CONSTRAINT_KEY) if t.constraints else None
        writer.writerow({
            "number": t.number, "state": t.state.name,
            "fail_reason": t.user_attrs.get(FAIL_REASON, ""),
            "family": t.user_attrs.get("config", {}).get("model.family",
                                                          t.params.get("model.family", "")),
            "value": repr(t.value) if t.state == TrialState.COMPLETE else "",
            "constraint": "" if constraint is None else repr(constraint),
            "feasible": str(feasible(t)).lower() if t.constraints else "",
            **{k: _cell(t.params.get(k)) for k in params},
            **{k: _cell(t.user_attrs.get(k)) for k in measures},
            "last_step": _cell(t.last_step),
            # what the pruner compared at that step (see Objective.pruning_value)
            "last_reported": _cell(t.intermediate_values.get(t.last_step)),
            "datetime_start": t.datetime_start.isoformat() if t.datetime_start else "",
            "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else "",
            "duration_s": f"{t.duration.total_seconds():.2f}" if t.duration else "",
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id", ""),
        })
    return buffer.getvalue()


def best_per_family(trials: list[FrozenTrial], families: list[str]) -> dict[str, FrozenTrial]:
    """The best feasible trial of each family that has one."""
    best = {f: best_feasible([t for t in trials
                              if t.user_attrs.get("config", {}).get("model.family") == f])
            for f in families}
    return {f: t for f, t in best.items() if t is not None}


def _best_figures(trial: FrozenTrial, uri: str, data: Dataset, folder: Path, say) -> str:
    """Put figures/best_<name>.png of ``trial`` into ``folder``: its run's artefacts, else
    redrawn from a retraining of its config; returns where they came from."""
    names = tuple(sections.BEST_FIGURES)
    run_id = trial.user_attrs.get("mlflow_run_id")
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        found = {p.stem: p for p in artifacts.download(uri, run_id, "figures", tmp)} \
            if run_id else {}
        if all(name in found for name in names):
            for name in names:
                shutil.copyfile(found[name], folder / "figures" / f"best_{name}.png")
            return f"artefacts of its MLflow run `{run_id}`"
    from experiments.runner import draw, train_and_evaluate

    say(f"trial {trial.number} has no figures in MLflow: retraining its config to draw them")
    cfg = from_flat(trial.user_attrs["config"])
    for name, fig in draw(train_and_evaluate(cfg, data).model, data, cfg, names).items():
        fig.savefig(folder / "figures" / f"best_{name}.png", dpi=plots.DPI)
    return "redrawn from a retraining of its config (its run's figures are not in MLflow)"


def build(study: optuna.Study, storage_url: str, uri: str, parent: str | None,
          tags: dict[str, str] | None, data: Dataset, dest: Path, folder: Path,
          say=print) -> FrozenTrial | None:
    """Write the report's files into ``folder`` (to be moved to ``dest``); returns the best
    feasible trial."""
    spec = study.user_attrs[SPEC_ATTR]
    trials = study.get_trials(deepcopy=False)
    overall = best_feasible(trials)
    shown = overall or closest_infeasible(trials)
    (folder / "figures").mkdir()
    say(f"report on study {study.study_name!r}: {len(trials)} trials")
    findings = sections.Findings(
        study_name=study.study_name, storage=storage_url, spec=spec, trials=trials,
        best=best_per_family(trials, spec["families"].split(",")), overall=overall,
        shown=shown, figure_source=_best_figures(shown, uri, data, folder, say), data=data,
        baselines=baseline_rows(spec, data, say), uri=uri, tags=tags, parent=parent,
        folder=dest)
    blocks = sections.page(findings, folder)
    title = f"Study {study.study_name}"
    (folder / "report.md").write_text(markdown(title, blocks))
    (folder / "report.html").write_text(html_page(title, blocks, folder))
    (folder / "trials.csv").write_text(trials_csv(trials))
    if overall is not None:
        (folder / "best_config.json").write_text(
            from_flat(overall.user_attrs["config"]).to_json() + "\n")
    return overall


def write(storage_url: str, name: str | None = None, out: str | None = None,
          uri: str | None = None, say=print) -> Written:
    """Check everything, build the report beside its folder, move it into place and log it to
    the study's parent MLflow run."""
    from experiments import data as data_module

    study = load_study(storage_url, name)
    uri = tracking_uri(uri)
    parent = study.user_attrs.get(PARENT_ATTR)
    tags = None
    if parent is not None:
        try:
            tags = artifacts.run_tags(uri, parent)
        except Exception as err:  # an unreachable server, a broken store: one line for the user
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ReportError(f"cannot read the study's MLflow runs from {uri}: "
                              f"{first[:300]}") from err
        if tags is None:
            raise ReportError(f"the MLflow runs of study {study.study_name!r} are not in {uri}; "
                              f"pass the --tracking-uri it ran with")
    spec = study.user_attrs[SPEC_ATTR]
    data = data_module.load(spec["data.name"], spec["data.val_fraction"], spec["data.seed"])
    dest = report_folder(study.study_name, out)
    stage = _stage(dest)
    try:
        best = build(study, storage_url, uri, parent, tags, data, dest, stage, say)
        _move_into_place(stage, dest)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if parent is not None:
        artifacts.log_folder(uri, parent, dest, "report")
    return Written(dest, best, parent)
