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

import json
import re
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from experiments.config import from_flat
from experiments.data import Dataset
from study import confirm
from study.recording import PARENT_ATTR
from study.report import ReportError, sections
from study.report.document import html_page, markdown
from study.report.exports import summary_json, trials_csv
from study.report.findings import Findings, gather
from study.results import SPEC_ATTR, Constraint, stored_spec
from study.storage import check_url, mask, open_storage
from tracking import artifacts
from tracking.runs import Tracker
from tracking.store import tracking_uri

REPORTS = Path("reports")


@dataclass(frozen=True)
class Written:
    folder: Path
    best: FrozenTrial | None  # the confirmed winner's trial, else the search's best
    logged_to: str | None  # the parent run id the folder was logged to
    to_confirm: str | None  # the command that confirms what is not confirmed yet


def _existing_storage(url: str) -> optuna.storages.BaseStorage:
    """Open a storage that must already exist: a report never creates one."""
    check_url(url)
    path = (
        url.removeprefix("journal:")
        if url.startswith("journal:")
        else url.split(":///", 1)[1]
        if url.startswith("sqlite")
        else None
    )
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
        trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(
            deepcopy=False
        )
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
        raise ReportError(
            f"no study {name!r} in {mask(storage_url)}; it holds: {listed or 'no study'}"
        ) from None
    if SPEC_ATTR not in study.user_attrs:
        raise ReportError(
            f"study {name!r} was not made by `python -m study run` "
            f"(it has no {SPEC_ATTR!r} attribute)"
        )
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    if not states["COMPLETE"]:
        seen = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "no trials"
        raise ReportError(
            f"study {name!r} has no completed trial yet ({seen}); run more trials first"
        )
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
    if dest.exists() and not (
        dest.is_dir() and (not any(dest.iterdir()) or (dest / "report.md").is_file())
    ):
        raise ReportError(f"{dest} exists and is not a report folder; pick another --out")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # mkdir, not mkdtemp: its mode is the user's umask's, as the report's should be (mkdtemp's
        # 0700 would make the report private)
        stage = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}"
        stage.mkdir()
        return stage
    except OSError as err:
        raise ReportError(f"cannot write the report to {dest}: {err.strerror or err}") from None


def _move_into_place(stage: Path, dest: Path) -> None:
    old = None
    if dest.exists():
        old = dest.with_name(f"{stage.name}.old")
        dest.rename(old)
    stage.rename(dest)
    if old is not None:
        shutil.rmtree(old)


def build(f: Findings, name: str, folder: Path) -> None:
    """Write the report of study ``name`` on ``f`` into ``folder`` (to be moved to its place)."""
    blocks = sections.page(f, folder)
    title = f"Study {name}"
    (folder / "report.md").write_text(markdown(title, blocks))
    (folder / "report.html").write_text(html_page(title, blocks, folder))
    (folder / "trials.csv").write_text(trials_csv(f.trials))
    (folder / "summary.json").write_text(json.dumps(summary_json(f), indent=2) + "\n")
    best = (
        f.winner.config
        if f.winner
        else (f.search_overall.user_attrs["config"] if f.search_overall else None)
    )
    if best is not None:
        (folder / "best_config.json").write_text(from_flat(best).to_json() + "\n")


def open_tracking(study: optuna.Study, uri: str | None, data: Dataset) -> confirm.Recorder | None:
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
        raise ReportError(f"cannot read the study's MLflow runs from {uri}: {first[:300]}") from err
    if tags is None:
        raise ReportError(
            f"the MLflow runs of study {study.study_name!r} are not in {uri}; "
            f"pass the --tracking-uri it ran with"
        )
    return tags


def write(
    storage_url: str,
    name: str | None = None,
    out: str | None = None,
    uri: str | None = None,
    target: tuple[str, float] | None = None,
    say=print,
) -> Written:
    """Check everything, build the report beside its folder, move it into place and log it to
    the study's parent MLflow run. ``target`` (measure, value) asks for another constraint
    than the study's: its winners come from the stored trials, nothing is trained."""
    from experiments import data as data_module

    study = load_study(storage_url, name)
    uri = tracking_uri(uri)
    parent = study.user_attrs.get(PARENT_ATTR)
    tags = _parent_tags(study, uri, parent) if parent is not None else None
    spec = stored_spec(study, target)
    data = data_module.load(spec.base.data.name, spec.base.data.val_fraction, spec.base.data.seed)
    own = target is None or Constraint.of(study.user_attrs[SPEC_ATTR]) == spec.constraint
    dest = report_folder(study.study_name, out, None if own else spec.constraint)
    stage = _stage(dest)
    try:
        say(
            f"report on study {study.study_name!r}: {len(study.get_trials(deepcopy=False))} "
            f"trials, {spec.constraint.describe()}"
        )
        f = gather(study, storage_url, uri, parent, tags, data, spec.constraint, dest, stage, say)
        build(f, study.study_name, stage)
        _move_into_place(stage, dest)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if parent is not None:
        artifacts.log_folder(uri, parent, dest, "report" if own else f"report/{dest.name}")
    return Written(
        dest,
        f.winner.trial if f.winner else f.search_overall,
        parent,
        f.confirm_command if f.unconfirmed or not (f.winner or f.confirmed) else None,
    )
