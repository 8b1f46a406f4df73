"""What `kfs train` and `make demo` print after training: results, recovery, stages, tiers and the gate."""

from __future__ import annotations

import io

from rich.console import Console


def test_the_policy_summary_prints_every_table_of_a_published_candidate(published):
    from kfs.summaries import print_policy_summary

    lake = published[0]
    out = io.StringIO()
    print_policy_summary(Console(file=out, width=200), lake)
    text = out.getvalue()
    for expected in ("validation markets", "recovery of the planted edge", "what each training stage adds",
                     "complexity tiers", "best_rule:", "published ", "gate: policy"):
        assert expected in text, expected
