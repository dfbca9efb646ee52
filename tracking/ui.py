"""Serve the MLflow UI on a tracking store and print a link per experiment.

    python -m tracking ui [--port 5000] [--host 127.0.0.1] [--tracking-uri URI]
                          [--artifacts-destination DIR]

Binds to 127.0.0.1 unless told otherwise: the MLflow server has no authentication. The links
open the "model training" view (runs table, per-epoch charts, artefacts); MLflow's default
landing page for an experiment is its GenAI view, which is of no use here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys

from mlflow import MlflowClient

from tracking.store import mask


def experiment_links(uri: str, base_url: str) -> list[tuple[str, str]]:
    """``(experiment name, URL of its runs table in the model-training view)`` per experiment."""
    client = MlflowClient(tracking_uri=uri)
    return [
        (e.name, f"{base_url}/#/experiments/{e.experiment_id}/runs?workflowType=machine_learning")
        for e in client.search_experiments()
        if e.name != "Default"
    ]


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


def server_command(
    uri: str, host: str, port: int, artifacts_destination: str | os.PathLike | None = None
) -> list[str]:
    """``mlflow server`` on store ``uri``; with ``artifacts_destination`` it also stores the
    artefacts that clients upload (workers on other machines need no shared folder)."""
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if artifacts_destination is not None:
        command += ["--artifacts-destination", str(artifacts_destination)]
    return command


def serve(
    uri: str, host: str = "127.0.0.1", port: int = 5000, artifacts_destination: str | None = None
) -> int:
    """Run the server in the foreground until Ctrl-C; returns its exit code."""
    if not port_free(host, port):
        print(
            f"error: port {port} on {host} is in use; pick another with --port (make ui PORT=...)",
            file=sys.stderr,
        )
        return 2
    base = f"http://{host}:{port}"
    print(f"MLflow UI for {mask(uri)}\n  {base}")
    for name, link in experiment_links(uri, base):
        print(f"  {name}: {link}")
    print("Ctrl-C stops it.", flush=True)
    # the server runs uvicorn in processes of its own: give them a process group, and stop the
    # whole group on Ctrl-C or SIGTERM so no server outlives this command
    proc = subprocess.Popen(
        server_command(uri, host, port, artifacts_destination), start_new_session=True
    )

    def stop(*_):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop()
        proc.wait()
        return 0
