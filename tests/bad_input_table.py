"""The table of bad input for test_bad_input.py: each command line and what its one-line
error says."""

from servers import free_port

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
    "bench: no repeats": (["bench", "--repeats", "0"], "--packs and --repeats >= 1"),
    "bench: a pack of 0": (["bench", "--packs", "1", "0"], "--packs and --repeats >= 1"),
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
