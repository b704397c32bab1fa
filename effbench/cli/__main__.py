"""`python -m effbench.cli`, as the `effbench` console script."""

import sys

from effbench.cli import app

if __name__ == "__main__":  # importing it (tests/test_layout.py imports every module) runs nothing
    sys.exit(app())
