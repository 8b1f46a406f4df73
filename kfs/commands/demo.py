"""`kfs demo` (`make demo`): the main job end to end on the embedded default."""

from __future__ import annotations

import argparse

from kfs.console import console
from kfs.demo import run_demo


def run(args: argparse.Namespace) -> int:
    return run_demo(console)
