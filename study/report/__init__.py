"""The study report, and what ``python -m study run`` and ``confirm`` print when they end.

- write.py: ``python -m study report``: loads the study, builds the folder, logs it to MLflow
- findings.py: what the report shows, gathered once from Optuna's storage and MLflow
- sections.py: the page in reading order (summary, warnings, the study, files), with the
  tables (tables.py), topk beside the penalty families (structural.py) and the figures
  (gallery.py, drawn by plots.py); numbers.py writes their numbers
- document.py: renders the page's blocks as Markdown and as one self-contained HTML page
- exports.py: ``trials.csv`` and ``summary.json``, for programs
- comparison.py: the winners beside the baselines, PCA and the mean image
- console.py: the lines ``run`` and ``confirm`` print
"""


class ReportError(ValueError):
    """A report that cannot be made as asked; the CLI prints it in one line and exits 2."""
