"""`kfs train`: train, validate and publish the policy (training_job)."""

from __future__ import annotations

import argparse

from kfs.console import console
from kfs.runners import run_training_job
from kfs.summaries import print_policy_summary


def run(args: argparse.Namespace) -> int:
    result = run_training_job(console, profile=args.profile, seconds=args.seconds, steps=args.steps)
    print_policy_summary(console)
    return 0 if result.success else 1
