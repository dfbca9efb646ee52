"""Tracking off the training process: MLflow writes done in order by a process of their own.

A study trains while its trials' metrics, figures and models are written. In a thread of the
training process that work (MLflow's database layer, matplotlib) holds Python's lock most of the
time, and training beside it slowed to a third; so the training process only queues it. A
``QueuedRun`` has the methods of ``tracking.runs.Run``; each call is sent to the writer's
process (forked when the writer starts, before training does) and done there, in the order sent.
Per-epoch metrics are gathered into a ``log_batch`` every few epochs, and the last ones go
with the run's end tags. Figures and pictures travel as sketches (a function with its data bound)
and are drawn there too.

Work that fails is reported on stderr (one line), counted and kept by whose run it was
(``Writer.failed``); it never stops the training. ``flush`` waits until everything sent so far is
done. A run's last write, ``QueuedRun.mark_recorded``, tags it ``recorded=true`` only if every
earlier write to the run succeeded: a run whose writes were lost (its training process killed
with them still queued) or failed keeps ``recorded=false`` (docs/faults.md).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient

from tracking.runs import Run

# metric values per run gathered before they are sent: each write to MLflow's SQL store costs
# about as much as 60 values in it, so a run's values are sent as MLflow's limit of a write
# fills (1,000: a trial's whole history up to 80 epochs, sent with its end), or every BATCH_S
# seconds while it trains, for the user who watches it
BATCH, BATCH_S = 1000, 30.0
ORPHAN_POLL_S = 1.0  # how often the writer checks that its training process is alive

_clients: dict[tuple[int, str], MlflowClient] = {}
# in the writer's process: held through each write, so that a writer whose training process was
# killed ends between two writes, never halfway through one (a file half copied)
_busy = threading.Lock()
_failed_runs: set[str] = set()  # in the writer's process: runs with a write that failed


class Unrecorded(RuntimeError):
    """A run's mark not set, because an earlier write to the run failed."""


def _run(uri: str, run_id: str) -> Run:
    """The run in this process's own client (a forked one must not share its parent's)."""
    key = (os.getpid(), uri)
    if key not in _clients:
        _clients[key] = MlflowClient(tracking_uri=uri)
    return Run(_clients[key], run_id)


def _orphaned(parent: int) -> None:
    # a training process killed outright (SIGKILL) cannot stop its writer, which would wait
    # for work forever; what it had not sent is lost with it (its runs keep recorded=false),
    # so the writer ends too, once the write in progress is done
    while os.getppid() == parent:
        time.sleep(ORPHAN_POLL_S)
    _busy.acquire()
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
    with _busy:
        try:
            if method == "mark_recorded" and run_id in _failed_runs:
                raise Unrecorded("not marked recorded: an earlier write to the run failed")
            getattr(_run(uri, run_id), method)(*args)
        except BaseException:
            _failed_runs.add(run_id)
            raise
        finally:
            if remove:
                shutil.rmtree(remove, ignore_errors=True)


@dataclass(frozen=True)
class Failure:
    """A write that failed: whose run (``what``, e.g. ``trial 12``), which call, why."""

    what: str
    method: str
    error: str  # the exception's type and the first line of its message


class Writer:
    def __init__(self, uri: str):
        self.uri = uri
        self.failed: list[Failure] = []
        # (future, what, method, the folder to remove after it)
        self._futures: list[tuple[Future, str, str, str | None]] = []
        self._lock = threading.Lock()
        # forked now, while nothing of the study runs yet; spawned (a fresh interpreter) where
        # fork is not offered
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        self._process = ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context(method),
            initializer=_start_writer,
            initargs=(os.getpid(),),
        )
        # what the process holds when it forks is frozen for the child's garbage collector: a
        # cycle it collected could hold a TensorFlow function, whose finalizer calls into a
        # runtime that does not survive a fork (a segmentation fault, seen in the tests, whose
        # process holds many)
        gc.freeze()
        try:
            self._process.submit(int).result()
        finally:
            gc.unfreeze()

    @property
    def failures(self) -> int:
        """How many writes have failed so far (of those found done)."""
        return len(self.failed)

    def send(
        self, run_id: str, method: str, *args, remove: str | None = None, what: str = ""
    ) -> None:
        """``Run(run_id).method(*args)`` in the writer's process, after everything sent before;
        the folder ``remove`` is deleted after it. ``what`` names the run in failure reports."""
        what = what or f"run {run_id}"
        try:
            future = self._process.submit(_call, self.uri, run_id, method, args, remove)
        except RuntimeError as err:  # the writer's process died (BrokenProcessPool) or ended
            self._failed(what, method, err, remove)
            return
        with self._lock:
            self._futures.append((future, what, method, remove))
        self._report(wait=False)

    def flush(self) -> None:
        """Wait until everything sent so far is done."""
        self._report(wait=True)

    def close(self) -> None:
        """Finish what was sent and stop the writer's process."""
        self.flush()
        self._process.shutdown()

    def summary(self) -> str:
        """The failed writes in one line: how many, whose runs, the first error; "" if none."""
        if not self.failed:
            return ""
        runs: dict[str, list[str]] = {}
        for f in self.failed:
            runs.setdefault(f.what, []).append(f.method)
        named = ", ".join(
            f"{what} ({', '.join(dict.fromkeys(methods))})"
            for what, methods in list(runs.items())[:5]
        )
        more = f" and {len(runs) - 5} more" if len(runs) > 5 else ""
        return (
            f"{len(self.failed)} tracking write(s) failed: {named}{more}; first: "
            f"{self.failed[0].method}: {self.failed[0].error}"
        )

    def _report(self, wait: bool) -> None:
        done: list[tuple[Future, str, str, str | None]] = []
        with self._lock:  # one look at each future: done ones are reported, the rest kept
            pending: list[tuple[Future, str, str, str | None]] = []
            for item in self._futures:
                (done if wait or item[0].done() else pending).append(item)
            self._futures = pending
        for future, what, method, remove in done:
            err = future.exception()
            if err is not None:
                self._failed(what, method, err, remove)

    def _failed(
        self, what: str, method: str, err: BaseException, remove: str | None = None
    ) -> None:
        if remove:  # the write's copy, left when the writer's process died before it ran
            shutil.rmtree(remove, ignore_errors=True)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        self.failed.append(Failure(what, method, f"{type(err).__name__}: {first}"))
        print(
            f"warning: tracking failed ({what}, {method}): {type(err).__name__}: {first}",
            file=sys.stderr,
            flush=True,
        )


class QueuedRun:
    """A run whose writes are sent to a ``Writer``: the methods of ``tracking.runs.Run`` that a
    trial uses, returning at once. ``log_figures`` sends sketches, drawn by the writer. ``what``
    names the run in failure reports (e.g. ``trial 12``)."""

    def __init__(self, writer: Writer, run_id: str, what: str = ""):
        self.writer, self.run_id, self.what = writer, run_id, what
        self._metrics: list[tuple[dict[str, float], int]] = []
        self._params: dict[str, str] = {}  # sent with the next metrics or tags
        self._since = time.monotonic()  # when the metrics gathered so far began

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        if not self._metrics:
            self._since = time.monotonic()
        self._metrics.append((dict(metrics), step))
        if (
            sum(len(m) for m, _ in self._metrics) >= BATCH
            or time.monotonic() - self._since >= BATCH_S
        ):
            self._send_metrics()

    def _send_metrics(self, tags: dict[str, str] | None = None) -> None:
        """The metrics and params gathered so far, and ``tags``, in one write."""
        if self._metrics or self._params or tags:
            self.writer.send(
                self.run_id, "log_metric_steps", self._metrics, tags, self._params, what=self.what
            )
            self._metrics, self._params = [], {}

    def _send(self, method: str, *args, remove: str | None = None) -> None:
        self._send_metrics()  # in the order logged
        self.writer.send(self.run_id, method, *args, remove=remove, what=self.what)

    def log_figures(self, sketches: Mapping[str, Callable], folder: str = "figures") -> None:
        self._send("log_figures", sketches, folder)

    def log_images(self, pictures: Mapping[str, Callable], folder: str = "figures") -> None:
        self._send("log_images", pictures, folder)

    def log_dict(self, data: dict, path: str) -> None:
        self._send("log_dict", data, path)

    def log_text(self, text: str, path: str) -> None:
        self._send("log_text", text, path)

    def log_file(self, local_path: str | Path, artifact_dir: str | None = None) -> None:
        """The file is copied first: the caller may delete it as soon as this returns."""
        folder = tempfile.mkdtemp(prefix="sae-queued-")
        copy = shutil.copy2(local_path, folder)
        self._send("log_file", copy, artifact_dir, remove=folder)

    def log_params(self, params: dict[str, object]) -> None:
        """Sent with the next metrics or tags (or the next other write)."""
        self._params.update({k: str(v) for k, v in params.items()})

    def set_tags(self, tags: Mapping[str, object]) -> None:
        """In one write with the metrics and params gathered so far."""
        self._send_metrics({k: str(v) for k, v in tags.items()})

    def finish(self, status: str = "FINISHED") -> None:
        self._send("finish", status)

    def mark_recorded(self) -> None:
        """The run's last write: tag it ``recorded=true``, unless a write to it failed."""
        self._send("mark_recorded")

    def flush(self) -> None:
        """Send the metrics gathered so far."""
        self._send_metrics()
