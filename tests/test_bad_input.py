"""Bad input, all in one table, through both command lines: each case ends with one line that
names the problem and exit code 2, and leaves the stores as they were, byte for byte. A learning
rate that diverges is the exception: its trial fails and the study goes on (experiments: its run
is stored FAILED and the command exits 2).

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
from mlflow import MlflowClient
from optuna.trial import TrialState
from servers import free_port
from test_data import BAD_INPUTS

from experiments.cli import main as experiments_main
from study import space
from study.cli import main as study_main
from study.recording import TRACKING_ATTR, _elsewhere

STUDY = [
    "--family",
    "sparse_kl",
    "--epochs",
    "1",
    "--pruner",
    "none",
    "--set",
    "train.batch_size=64",
    "--confirm-seeds",
    "0",
]
CLOSED = free_port()  # nothing listens here

# (command line, what the one-line error says); <data>: the tiny dataset, <in>: a folder of
# inputs written by _inputs, <closed>: a port nobody listens on, <...>: a broken dataset of
# test_data.BAD_INPUTS; a leading "x" runs the experiments command line
CASES = {
    # command line and config: unknown names, values out of range, wrong types
    "unknown family": (["run", "--family", "vae"], "unknown family 'vae'"),
    "unknown pruner": (["run", "--pruner", "asha"], "unknown pruner 'asha'"),
    "target 0": (["run", "--target", "0"], "--target must be > 0"),
    "negative target": (["run", "--target", "-0.1"], "--target must be > 0"),
    "infinite target": (["run", "--target", "inf"], "--target must be > 0 and finite, got inf"),
    "target not a number": (["run", "--target", "nan"], "--target must be > 0 and finite, got nan"),
    "empty study name": (["run", "--study-name", ""], "--study-name must not be empty"),
    "study name with a newline": (
        ["run", "--study-name", "a\nb"],
        "--study-name 'a\\nb' holds the non-printable character '\\n'",
    ),
    "study name with a terminal escape": (
        ["run", "--study-name", "x\x1b[2J"],
        "non-printable character '\\x1b'",
    ),
    "report: empty study name": (["report", "--study-name", ""], "--study-name must not be empty"),
    "no trials": (["run", "--n-trials", "0"], "--n-trials must be >= 1"),
    "negative timeout": (["run", "--timeout", "-5"], "--timeout must be > 0"),
    "no epochs": (["run", "--epochs", "0"], "train.epochs must be >= 1"),
    "epochs not a number": (["run", "--epochs", "two"], "invalid int value: 'two'"),
    "no workers": (["run", "--workers", "0"], "--workers must be >= 1"),
    "fixing a searched value": (
        ["run", "--set", "model.beta=3"],
        "model.beta is searched by the study",
    ),
    "unknown activation": (
        ["run", "--set", "model.activation=tanh"],
        "model.activation must be one of",
    ),
    "unknown config key": (["run", "--set", "model.bogus=1"], "unknown config key 'model.bogus'"),
    "latent not an int": (["run", "--set", "model.latent=abc"], "model.latent must be int"),
    "--set without =": (["run", "--set", "nonsense"], "--set expects key=value"),
    "resumed with another target": (
        ["run", *STUDY, "--data", "<data>", "--study-name", "kept", "--target", "0.1"],
        "exists with target=0.05, not 0.1",
    ),
    "resumed with another tracking store": (
        [
            "run",
            *STUDY,
            "--data",
            "<data>",
            "--study-name",
            "kept",
            "--tracking-uri",
            "sqlite:///<in>/other.db",
        ],
        "not sqlite:///<in>/other.db: resume it with --tracking-uri sqlite:///",
    ),
    "a code too large for memory": (
        ["run", *STUDY, "--data", "<data>", "--set", "model.latent=100000000"],
        "model.latent=100000000 does not fit in memory",
    ),
    "experiments: a code too large for memory": (
        ["x", "run", "ae", "--data", "<data>", "--set", "model.latent=100000000"],
        "ae: model.latent=100000000 does not fit in memory",
    ),
    "unknown command": (["fly"], "invalid choice: 'fly'"),
    "experiments: unknown name": (["x", "run", "gan"], "unknown experiment 'gan'"),
    "experiments: p out of range": (
        ["x", "run", "sparse_kl", "--set", "model.p=1.5"],
        "model.p must be in (0, 1)",
    ),
    "experiments: negative l1": (
        ["x", "run", "sparse_l1", "--set", "model.l1=-1e-4"],
        "model.l1 must be >= 0",
    ),
    "experiments: latent 0": (
        ["x", "run", "ae", "--set", "model.latent=0"],
        "model.latent must be >= 1",
    ),
    "experiments: k above the code": (
        ["x", "run", "topk", "--set", "model.k=33"],
        "model.k must be in 1 … model.latent (32) for topk, got 33",
    ),
    "experiments: k on a penalty family": (
        ["x", "run", "sparse_kl", "--set", "model.k=4"],
        "model.k has no effect on family 'sparse_kl'",
    ),
    "fixing k in a study": (
        ["run", "--family", "topk", "--set", "model.k=4"],
        "model.k is searched by the study",
    ),
    "experiments: nothing to run": (["x", "run"], "exactly one of them"),
    "experiments: a name and a config": (
        ["x", "run", "ae", "--config", "x.json"],
        "exactly one of them",
    ),
    "experiments: missing config": (
        ["x", "run", "--config", "/nonexistent.json"],
        "cannot read config",
    ),
    "experiments: config not JSON": (
        ["x", "run", "--config", "<in>/bad.json"],
        "is not valid JSON",
    ),
    # data: unknown, missing, corrupt, empty, wrongly shaped
    "unknown dataset": (["run", "--data", "cifar"], "unknown dataset 'cifar'"),
    "missing npz": (["run", "--data", "npz:/nonexistent/x.npz"], "no such file"),
    "corrupt npz": (["run", "--data", "<corrupt npz>"], "not a readable .npz archive"),
    "empty npz": (["run", "--data", "npz:<in>/empty.npz"], "not a readable .npz archive"),
    "images of the wrong shape": (["run", "--data", "<wrong shape>"], "shape (50, 27, 27)"),
    "fewer labels than images": (["run", "--data", "<label count>"], "50 images but"),
    "missing IDX file": (
        ["x", "run", "ae", "--data", "<missing idx file>"],
        "missing t10k-labels-idx1-ubyte",
    ),
    # stores: malformed URLs, unwritable paths, servers nobody runs
    "storage neither journal nor database": (
        ["run", "--storage", "mongodb://x/y"],
        "neither journal:PATH nor a database URL",
    ),
    "journal without a path": (["run", "--storage", "journal:"], "journal storage needs a path"),
    "sqlite in a missing folder": (
        ["run", "--storage", "sqlite:////nonexistent/dir/o.db"],
        "folder /nonexistent/dir does not exist",
    ),
    "journal under a file": (
        ["run", *STUDY, "--data", "<data>", "--storage", "journal:<in>/afile/j.log"],
        "cannot open storage",
    ),
    "malformed database port": (
        [
            "run",
            *STUDY,
            "--data",
            "<data>",
            "--storage",
            "postgresql+psycopg2://optuna@127.0.0.1:port/studies",
        ],
        "cannot open storage",
    ),
    "database nobody runs": (
        [
            "run",
            *STUDY,
            "--data",
            "<data>",
            "--storage",
            "postgresql+psycopg2://optuna:hunter2@127.0.0.1:<closed>/studies",
        ],
        "optuna:***@127.0.0.1:<closed>/studies': connection to server",
    ),
    "password variable not set": (
        ["run", "--storage", "postgresql://u:${NO_SUCH_VAR}@h/db"],
        "refers to ${NO_SUCH_VAR}, which is not set",
    ),
    "workers on SQLite": (
        ["run", "--workers", "2", "--storage", "sqlite:///<in>/o.db"],
        "not SQLite",
    ),
    "tracking server nobody runs": (
        ["run", *STUDY, "--data", "<data>", "--tracking-uri", "http://127.0.0.1:<closed>"],
        "MLflow tracking server http://127.0.0.1:<closed> does not answer",
    ),
    "tracking store in a missing folder": (
        [
            "run",
            *STUDY,
            "--data",
            "<data>",
            "--tracking-uri",
            "sqlite:////nonexistent/dir/mlflow.db",
        ],
        "folder /nonexistent/dir does not exist",
    ),
    "experiments: tracking server nobody runs": (
        ["x", "run", "ae", "--data", "<data>", "--tracking-uri", "http://127.0.0.1:<closed>"],
        "does not answer",
    ),
}


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
