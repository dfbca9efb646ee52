"""``python -m study``: see study/cli.py."""

import os
import sys

# TensorFlow's C++ logs only what a user acts on. At level 2 it still printed an error line for
# every compilation found in XLA's cache on disk (experiments.packed.use_compile_cache): it
# tries each entry as text before reading it as the binary it is. Read at TensorFlow's import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from study.cli import main  # noqa: E402  (after the setting above)

if __name__ == "__main__":
    sys.exit(main())
