"""The MLflow UI launcher: links into the model-training view, a real server on loopback."""

import json
import socket
import subprocess
import sys
import urllib.request

import pytest
from servers import answers, free_port

from tracking.runs import Tracker
from tracking.ui import experiment_links, port_free, serve


def test_links_open_the_model_training_view(tracking_uri):
    tracker = Tracker("my-study")
    links = dict(experiment_links(tracking_uri, "http://127.0.0.1:5000"))
    assert links == {
        "my-study": f"http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}"
        "/runs?workflowType=machine_learning"
    }


def test_busy_port_is_a_one_line_error(tracking_uri, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_free("127.0.0.1", port)
        assert serve(tracking_uri, port=port) == 2
    assert f"port {port}" in capsys.readouterr().err


@pytest.mark.slow
def test_server_answers_on_loopback_with_the_store(tracking_uri):
    tracker = Tracker("served")
    with tracker.start_run("r1", params={"model.beta": 3.0}):
        pass
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tracking",
            "ui",
            "--port",
            str(port),
            "--tracking-uri",
            tracking_uri,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        if not answers(base, proc, 60):
            pytest.fail(f"server did not start: {proc.stdout.read()[-2000:]}")
        req = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search",
            method="POST",
            data=json.dumps({"experiment_ids": [tracker.experiment_id]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            found = json.load(r)["runs"]
        assert [run["info"]["run_name"] for run in found] == ["r1"]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert port_free("127.0.0.1", port), "the server outlived its launcher"
    assert f"{base}/#/experiments/{tracker.experiment_id}/runs?workflowType=machine_learning" in out
