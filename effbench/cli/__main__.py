"""`python -m effbench.cli`, as the `effbench` console script."""

from effbench.cli import console

if __name__ == "__main__":  # importing it (tests/test_layout.py imports every module) runs nothing
    console()
