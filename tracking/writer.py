"""Tracking off the training thread: one background thread performs queued MLflow work in order.

A study trains while its trials' metrics, figures and models are written: the training thread
only queues the work (``submit``), and per-epoch metrics are gathered into one ``log_batch`` per
run (``log_metrics``) instead of a database write per epoch. ``flush`` waits until everything
queued so far is written. Work that fails is reported on stderr (one line) and counted; it never
stops the training.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable

from tracking.runs import Run

BATCH = 200  # metric values per run gathered before they are written (MLflow takes 1,000)


class Writer:
    def __init__(self):
        self._queue: queue.Queue[Callable[[], None]] = queue.Queue()
        self._pending: dict[str, tuple[Run, list[tuple[dict[str, float], int]]]] = {}
        self._lock = threading.Lock()
        self.failures = 0
        threading.Thread(target=self._work, name="tracking-writer", daemon=True).start()

    def submit(self, work: Callable[[], None]) -> None:
        """Run ``work`` on the writer thread, after everything submitted before it."""
        self._queue.put(work)

    def log_metrics(self, run: Run, metrics: dict[str, float], step: int) -> None:
        """Queue ``metrics`` at ``step``; written with the run's next batch."""
        with self._lock:
            entry = self._pending.setdefault(run.run_id, (run, []))
            entry[1].append((dict(metrics), step))
            full = sum(len(m) for m, _ in entry[1]) >= BATCH
        if full:
            self.submit(lambda: self._write_metrics(run.run_id))

    def write(self, run: Run, work: Callable[[], None]) -> None:
        """``work`` on ``run``, after the run's metrics queued before it are written."""
        def ordered() -> None:
            self._write_metrics(run.run_id)
            work()
        self.submit(ordered)

    def flush(self) -> None:
        """Write everything queued so far (metrics included) and wait until it is done."""
        with self._lock:
            runs = list(self._pending)
        for run_id in runs:
            self.submit(lambda run_id=run_id: self._write_metrics(run_id))
        self._queue.join()

    def _write_metrics(self, run_id: str) -> None:
        with self._lock:
            run, entries = self._pending.pop(run_id, (None, []))
        if run is not None:
            run.log_metric_steps(entries)

    def _work(self) -> None:
        while True:
            work = self._queue.get()
            try:
                work()
            except Exception as err:  # noqa: BLE001 - reported, and training goes on
                self.failures += 1
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
                print(f"warning: tracking failed: {type(err).__name__}: {first}",
                      file=sys.stderr, flush=True)
            finally:
                self._queue.task_done()
