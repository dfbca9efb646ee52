"""Ctrl-C that a study cannot lose.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT comes, and some places
swallow it: an exception raised inside a garbage-collector callback (JAX registers one, and
TensorFlow imports JAX where it is installed) is printed as "Exception ignored" and dropped, and
the study trained on. Inside ``remembered()`` a Ctrl-C still raises at once, as usual, and is
also remembered; the trial loop and the search call ``check()`` at every epoch's end, which
raises it again if it was lost.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_pressed = threading.Event()


@contextmanager
def remembered() -> Iterator[None]:
    """Remember every Ctrl-C until the block ends (where SIGINT is handled at all: in the main
    thread, and not ignored as in a background job)."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous == signal.SIG_IGN:
        yield
        return

    def pressed(signum, frame) -> None:
        _pressed.set()
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt

    signal.signal(signal.SIGINT, pressed)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _pressed.clear()


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed inside ``remembered()``, whether or not the
    KeyboardInterrupt it raised then reached anyone."""
    if _pressed.is_set():
        raise KeyboardInterrupt
