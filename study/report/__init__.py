"""The study report (write.py, ``python -m study report``), and what ``python -m study run`` and
``confirm`` print when they end (console.py)."""
