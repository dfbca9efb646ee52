"""Tracking off the training process: MLflow writes done in order by a process of their own.

A study trains while its trials' metrics, figures and models are written. In a thread of the
training process that work (MLflow's database layer, matplotlib) holds Python's lock most of the
time, and training beside it slowed to a third; so the training process only queues it. A
``QueuedRun`` has the methods of ``tracking.runs.Run``; each call is sent to the writer's
process (forked when the writer starts, before training does) and done there, in the order sent.
Per-epoch metrics are gathered into one ``log_batch`` per run. Figures travel as sketches (a
figure function with its data bound) and are drawn there too.

Work that fails is reported on stderr (one line) and counted; it never stops the training.
``flush`` waits until everything sent so far is done.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from mlflow import MlflowClient

from tracking.runs import Run

BATCH = 200  # metric values per run gathered before they are sent (MLflow takes 1,000)
ORPHAN_POLL_S = 1.0  # how often the writer checks that its training process is alive

_clients: dict[tuple[int, str], MlflowClient] = {}


def _run(uri: str, run_id: str) -> Run:
    """The run in this process's own client (a forked one must not share its parent's)."""
    key = (os.getpid(), uri)
    if key not in _clients:
        _clients[key] = MlflowClient(tracking_uri=uri)
    return Run(_clients[key], run_id)


def _orphaned(parent: int) -> None:
    # a training process killed outright (SIGKILL) cannot stop its writer, which would wait
    # for work forever; what it had not sent is lost with it, so the writer ends too
    while os.getppid() == parent:
        time.sleep(ORPHAN_POLL_S)
    os._exit(1)


def _start_writer(parent: int) -> None:
    threading.Thread(target=_orphaned, args=(parent,), daemon=True).start()
    # Ctrl-C reaches the whole process group: the training process ends its trials' runs and
    # then waits for this one to write them
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # writing takes only CPU time that training leaves idle (Linux's idle class), and catches
    # up when training pauses; elsewhere it yields as far as a nice value lets it
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(10)


def _call(uri: str, run_id: str, method: str, args: tuple, remove: str | None = None) -> None:
    try:
        getattr(_run(uri, run_id), method)(*args)
    finally:
        if remove:
            shutil.rmtree(remove, ignore_errors=True)


class Writer:
    def __init__(self, uri: str):
        self.uri = uri
        self.failures = 0
        self._futures: list[Future] = []
        self._lock = threading.Lock()
        # forked now, while nothing of the study runs yet; spawned (a fresh interpreter) where
        # fork is not offered
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        self._process = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(method),
                                            initializer=_start_writer,
                                            initargs=(os.getpid(),))
        self._process.submit(int).result()

    def send(self, run_id: str, method: str, *args, remove: str | None = None) -> None:
        """``Run(run_id).method(*args)`` in the writer's process, after everything sent before;
        the folder ``remove`` is deleted after it."""
        future = self._process.submit(_call, self.uri, run_id, method, args, remove)
        with self._lock:
            self._futures.append(future)
        self._report(wait=False)

    def flush(self) -> None:
        """Wait until everything sent so far is done."""
        self._report(wait=True)

    def close(self) -> None:
        """Finish what was sent and stop the writer's process."""
        self.flush()
        self._process.shutdown()

    def _report(self, wait: bool) -> None:
        futures: list[Future] = []
        with self._lock:  # one look at each future: done ones are reported, the rest kept
            pending = []
            for future in self._futures:
                (futures if wait or future.done() else pending).append(future)
            self._futures = pending
        for future in futures:
            err = future.exception()
            if err is not None:
                self.failures += 1
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
                print(f"warning: tracking failed: {type(err).__name__}: {first}",
                      file=sys.stderr, flush=True)


class QueuedRun:
    """A run whose writes are sent to a ``Writer``: the methods of ``tracking.runs.Run`` that a
    trial uses, returning at once. ``log_figures`` sends sketches, drawn by the writer."""

    def __init__(self, writer: Writer, run_id: str):
        self.writer, self.run_id = writer, run_id
        self._metrics: list[tuple[dict[str, float], int]] = []

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self._metrics.append((dict(metrics), step))
        if sum(len(m) for m, _ in self._metrics) >= BATCH:
            self._send_metrics()

    def _send_metrics(self) -> None:
        if self._metrics:
            self.writer.send(self.run_id, "log_metric_steps", self._metrics)
            self._metrics = []

    def _send(self, method: str, *args, remove: str | None = None) -> None:
        self._send_metrics()  # in the order logged
        self.writer.send(self.run_id, method, *args, remove=remove)

    def log_figures(self, sketches: dict[str, Callable], folder: str = "figures") -> None:
        self._send("log_figures", sketches, folder)

    def log_dict(self, data: dict, path: str) -> None:
        self._send("log_dict", data, path)

    def log_text(self, text: str, path: str) -> None:
        self._send("log_text", text, path)

    def log_file(self, local_path: str | Path, artifact_dir: str | None = None) -> None:
        """The file is copied first: the caller may delete it as soon as this returns."""
        folder = tempfile.mkdtemp(prefix="sae-queued-")
        copy = shutil.copy2(local_path, folder)
        self._send("log_file", copy, artifact_dir, remove=folder)

    def set_tags(self, tags: dict[str, object]) -> None:
        self._send("set_tags", {k: str(v) for k, v in tags.items()})

    def finish(self, status: str = "FINISHED") -> None:
        self._send("finish", status)

    def flush(self) -> None:
        """Send the metrics gathered so far."""
        self._send_metrics()
