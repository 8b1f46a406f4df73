"""`kfs bench`: the benchmarks (`python -m bench.run_all` from the repository root)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    """The benchmarks run from the repository root as `python -m bench.run_all` (they import the test
    oracles as the package `tests.reference`, which is not installed)."""
    repo = Path(__file__).resolve().parent.parent
    return subprocess.run([sys.executable, "-m", "bench.run_all", *args.names], cwd=repo).returncode
