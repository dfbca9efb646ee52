"""Bad input, all in one table (bad_input_table.py), through both command lines: each case ends
with one line that names the problem and exit code 2, and leaves the stores as they were, byte
for byte. A learning rate that diverges is the exception: its trial fails and the study goes on
(experiments: its run is stored FAILED and the command exits 2).

The data loader's own table of broken files is in test_data.py; a few of them come through the
command line here."""

import contextlib
import hashlib
import shutil
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from bad_input_table import CASES, CLOSED, STUDY
from mlflow import MlflowClient
from optuna.trial import TrialState
from test_data import BAD_INPUTS

from experiments.cli import main as experiments_main
from study import space
from study.cli import main as study_main
from study.recording import TRACKING_ATTR, _elsewhere


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_npz):
    """A folder holding the default stores with one finished study, 'kept', in them."""
    folder = tmp_path_factory.mktemp("stores")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        assert (
            study_main(
                ["run", *STUDY, "--data", tiny_npz, "--study-name", "kept", "--n-trials", "1"]
            )
            == 0
        )
    # the database's write-ahead log and its index, while this process holds it open
    assert {p.name for p in folder.iterdir()} - {"mlflow.db-wal", "mlflow.db-shm"} == {
        "studies",
        "mlflow.db",
        "mlartifacts",
    }
    return folder


@pytest.fixture
def workdir(stores, tmp_path, monkeypatch):
    """A copy of the stores as the working directory and tracking store of one case."""
    work = tmp_path / "work"
    shutil.copytree(stores, work)
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    return work


def _inputs(folder: Path, tiny_npz: str) -> dict[str, str]:
    folder.mkdir()
    (folder / "bad.json").write_text('{"model.beta": 3,')
    (folder / "empty.npz").write_bytes(b"")
    (folder / "afile").write_text("a file, not a folder")
    values = {"in": str(folder), "data": tiny_npz, "closed": str(CLOSED)}
    for name in ("corrupt npz", "wrong shape", "label count", "missing idx file"):
        sub = folder / name.replace(" ", "_")
        sub.mkdir()
        values[name] = BAD_INPUTS[name][0](sub)
    return values


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(f"<{key}>", value)
    return text


def _listing(folder: Path) -> dict[str, str]:
    """Each file's hash; a SQLite database's is its content's (its write-ahead log and the log's
    index, which a reader may touch, are part of it)."""

    def digest(p: Path) -> str:
        if p.suffix == ".db":
            with contextlib.closing(sqlite3.connect(p)) as db:
                return hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()
        return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"

    return {
        str(p.relative_to(folder)): digest(p)
        for p in sorted(folder.rglob("*"))
        if not p.name.endswith((".db-wal", ".db-shm"))
    }


def _exit_code(main, args) -> int:
    try:
        return main(args)
    except SystemExit as exit_:  # argparse's own errors
        return exit_.code


@pytest.mark.parametrize("args, message", CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_exit_2_and_leaves_the_stores_alone(
    args, message, workdir, tmp_path, tiny_npz, capsys, monkeypatch
):
    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    values = _inputs(tmp_path / "in", tiny_npz)
    args = [_fill(a, values) for a in args]
    main = study_main
    if args[0] == "x":
        main, args = experiments_main, args[1:]
    before = _listing(tmp_path)
    assert _exit_code(main, args) == 2
    err = capsys.readouterr().err.strip()
    assert _fill(message, values) in err and len(err.splitlines()) == 1, err
    assert "hunter2" not in err
    assert _listing(tmp_path) == before


def test_a_diverging_learning_rate_fails_its_trial_and_the_study_goes_on(
    workdir, tiny_npz, monkeypatch, capsys
):
    real = space.suggest  # the search cannot propose 1e25 on its own: put it into trial 1

    def suggest(trial, base, families):
        cfg = real(trial, base, families)
        return cfg.replace(**{"train.learning_rate": 1e25}) if trial.number == 1 else cfg

    monkeypatch.setattr(space, "suggest", suggest)
    assert (
        study_main(["run", *STUDY, "--data", tiny_npz, "--study-name", "kept", "--n-trials", "2"])
        == 0
    )
    study = optuna.load_study(
        study_name="kept",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend("studies/optuna-journal.log")
        ),
    )
    assert [t.state for t in study.trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]
    run = MlflowClient().get_run(study.trials[1].user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and "TrainingDiverged" in run.data.tags["reason"]
    assert study.trials[1].user_attrs["fail_reason"] == run.data.tags["reason"]
    assert "1 failed" in capsys.readouterr().out


def test_a_diverging_experiment_is_one_line_exit_2_and_a_failed_run(workdir, tiny_npz, capsys):
    # a huge step makes the weight decay overflow
    assert (
        experiments_main(
            [
                "run",
                "sparse_kl_wd",
                "--data",
                tiny_npz,
                "--epochs",
                "1",
                "--set",
                "train.learning_rate=1e25",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sparse_kl_wd: training diverged: loss became" in err
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("notebooks").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["error"].startswith("TrainingDiverged")


def _kept():
    return optuna.load_study(
        study_name="kept",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend("studies/optuna-journal.log")
        ),
    )


def test_a_study_resumed_with_another_tracking_store_names_the_one_it_started_with(
    stores, workdir, tiny_npz, tmp_path, monkeypatch, capsys
):
    started = _kept().user_attrs[TRACKING_ATTR]  # recorded as its parent run was created
    assert started == f"sqlite:///{stores / 'mlflow.db'}"
    elsewhere = tmp_path / "elsewhere.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")
    before = _listing(tmp_path)
    assert study_main(["run", *STUDY, "--data", tiny_npz, "--study-name", "kept"]) == 2
    assert capsys.readouterr().err == (
        f"error: study 'kept' keeps its MLflow runs in {started}, not sqlite:///{elsewhere}: "
        f"resume it with --tracking-uri {started} (or that MLFLOW_TRACKING_URI), or pick a new "
        f"--study-name\n"
    )
    assert _listing(tmp_path) == before and not elsewhere.exists()
    # the store moved (here: copied) with the study holds its runs: it resumes there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    assert (
        study_main(["run", *STUDY, "--data", tiny_npz, "--study-name", "kept", "--n-trials", "1"])
        == 0
    )
    assert _kept().user_attrs[TRACKING_ATTR] == f"sqlite:///{workdir / 'mlflow.db'}"
    # a study from before the store was recorded: its runs are elsewhere, it cannot say where
    older = SimpleNamespace(study_name="old", user_attrs={})
    assert _elsewhere(older, "http://u:secret@h:5000") == (
        "study 'old' keeps its MLflow runs in another tracking store than http://u:***@h:5000 "
        "(its parent run is not there): resume it with the --tracking-uri it started with, or "
        "pick a new --study-name"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["run", "--help"],
        ["report", "--help"],
        ["faults", "--help"],
        ["bench", "--help"],
        ["run", "--family", "nope"],
    ],
)
def test_help_and_bad_arguments_load_no_framework(argv):
    """``python -m study --help`` and a refused argument answer without importing Keras,
    TensorFlow, JAX, MLflow, matplotlib or scikit-learn (each costs seconds to load)."""
    import subprocess
    import sys

    heavy = ("keras", "tensorflow", "jax", "mlflow", "matplotlib", "sklearn")
    code = (
        f"import sys\nfrom study.cli import main\ntry:\n    main({argv!r})\n"
        f"except SystemExit:\n    pass\n"
        f"print('loaded:', sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "loaded: []"
