"""Checked as a person would: the report in headless Chromium, the study in the MLflow UI.

Chromium is Debian's ``chromium`` package (.ci/run installs it); without the binary the browser
tests skip and say why (with CI=true they fail). Screenshots go to screenshots/ (ignored by git)
for a person to look at.
"""

import json
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import optuna
import pytest
from servers import answers, free_port, unavailable

from study.recording import PARENT_ATTR
from study.results import best_feasible, feasible
from study.storage import open_storage

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.usefixtures("chromium_on_path")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"
PNG = b"\x89PNG\r\n\x1a\n"
# counts the page's images that loaded and writes the count into the page, for --dump-dom
PROBE = """<script>addEventListener("load", () => {
  const all = [...document.images], ok = all.filter(i => i.complete && i.naturalWidth > 0);
  const p = document.createElement("p"); p.id = "probe";
  p.textContent = `images ${ok.length}/${all.length}`; document.body.append(p);
});</script>"""


@pytest.fixture(scope="session")
def chromium_on_path() -> None:
    if CHROMIUM is None:
        unavailable(
            "no chromium binary on PATH (Debian: apt-get install chromium; .ci/run installs it)"
        )


def chromium(*args: str, size: str = "1400,900", budget_ms: int = 15000) -> str:
    """Run headless Chromium (flags that work offline); its stdout."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                f"--virtual-time-budget={budget_ms}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot(url: str, name: str, size: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / name
    path.unlink(missing_ok=True)
    chromium(f"--screenshot={path}", url, size=size)
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 20_000  # not a blank page
    return path


@pytest.mark.slow
@needs_chromium
def test_report_page_loads_every_image_and_shows_the_numbers(reported_study, tmp_path):
    page = (reported_study.folder / "report.html").read_text()
    probe = tmp_path / "probe.html"  # anywhere: the page needs nothing beside it
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    dom = chromium("--dump-dom", probe.as_uri())
    loaded, total = map(int, re.search(r'<p id="probe">images (\d+)/(\d+)</p>', dom).groups())
    assert loaded == total == page.count("<img ") == 8
    winner = json.loads((reported_study.folder / "summary.json").read_text())["winner"]
    for value in (
        winner["search"]["val_mse"],
        winner["search"]["test_mse"],
        winner["confirmed"]["test_mse_mean"],
        winner["confirmed"]["test_mse_sd"],
    ):
        assert f"{value:.4f}" in dom
    assert "<i>" not in dom and "Study &lt;i&gt;tiny&lt;/i&gt; &amp;" in dom
    assert "Comparison on the test split" in dom and "PCA, 32 components" in dom
    screenshot((reported_study.folder / "report.html").as_uri(), "report.png", "1400,2600")


@pytest.fixture(scope="module")
def mlflow_ui(reported_study, tmp_path_factory):
    """`python -m tracking ui` (what `make ui` runs) on the reported study's store, on a free
    loopback port; yields its base URL and the links it printed."""
    port = free_port()
    log = tmp_path_factory.mktemp("ui") / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tracking",
                "ui",
                "--port",
                str(port),
                "--tracking-uri",
                reported_study.uri,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        if not answers(base, proc, 90):
            pytest.fail(f"server did not start: {log.read_text()[-2000:]}")
        yield base, log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def api(base: str, path: str, body: dict | None = None):
    request = urllib.request.Request(
        f"{base}{path}",
        method="POST" if body else "GET",
        data=json.dumps(body).encode() if body else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return r.read() if "get-artifact" in path else json.load(r)


@pytest.mark.slow
def test_server_serves_the_study_runs_and_their_images(reported_study, mlflow_ui):
    base, _ = mlflow_ui
    study = optuna.load_study(
        study_name=reported_study.name, storage=open_storage(reported_study.storage)
    )
    name = urllib.parse.quote(reported_study.name)
    experiment = api(base, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}")
    runs = api(
        base,
        "/api/2.0/mlflow/runs/search",
        {"experiment_ids": [experiment["experiment"]["experiment_id"]], "max_results": 1000},
    )["runs"]
    tags = {
        r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs
    }
    parent = study.user_attrs[PARENT_ATTR]
    assert "mlflow.parentRunId" not in tags[parent]
    children = {
        run_id
        for run_id, t in tags.items()
        if t.get("mlflow.parentRunId") == parent and "trial" in t
    }
    assert children == {t.user_attrs["mlflow_run_id"] for t in study.trials}
    # beside the trials: one run per confirmation seed and per baseline seed, both nested
    confirmations = [t for t in tags.values() if t.get("kind") == "confirmation"]
    assert confirmations and all(t["mlflow.parentRunId"] == parent for t in confirmations)

    def artefacts(run_id: str, path: str) -> set[str]:
        query = urllib.parse.urlencode({"run_id": run_id, "path": path})
        return {f["path"] for f in api(base, f"/api/2.0/mlflow/artifacts/list?{query}")["files"]}

    for run_id in children:
        assert {
            f"figures/{n}.png" for n in ("reconstruction", "receptive_fields", "activations")
        } <= artefacts(run_id, "figures")
    best = best_feasible(study.trials).user_attrs["mlflow_run_id"]
    served = {
        (best, "figures/reconstruction.png"): None,
        (parent, "report/figures/frontier.png"): None,
        (parent, "report/report.html"): (reported_study.folder / "report.html").read_bytes(),
    }
    assert "report/report.html" in artefacts(parent, "report")
    for (run_id, path), expected in served.items():
        query = urllib.parse.urlencode({"path": path, "run_uuid": run_id})
        body = api(base, f"/get-artifact?{query}")
        assert body == expected if expected is not None else body[:8] == PNG


@pytest.mark.slow
@needs_chromium
def test_experiment_page_and_the_reports_feasible_trials_view(reported_study, mlflow_ui):
    base, printed = mlflow_ui
    link = re.search(rf"{re.escape(reported_study.name)}: (\S+)", printed)[1]
    assert link.startswith(f"{base}/#/experiments/") and "workflowType=machine_learning" in link
    screenshot(link, "mlflow_experiment.png", "1400,900")
    # the report's link to the feasible trials, best first, opens just those, in that order
    md = (reported_study.folder / "report.md").read_text()
    feasible_first = re.search(r"lowest `val_mse` first: <(\S+)>", md)[1]  # an autolink
    dom = chromium("--dump-dom", feasible_first.replace("http://127.0.0.1:5000", base))
    rows = dict(re.findall(r'row-index="(\d+)" row-id="([0-9a-f]+)"', dom))
    study = optuna.load_study(
        study_name=reported_study.name, storage=open_storage(reported_study.storage)
    )
    ranked = sorted((t for t in study.trials if feasible(t)), key=lambda t: t.value)
    assert [rows[str(i)] for i in range(len(rows))] == [
        t.user_attrs["mlflow_run_id"] for t in ranked
    ]
