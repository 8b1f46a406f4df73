"""`make bench`: every benchmark script, each writing bench/results/<name>.json."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

BENCHES = ["ingest_bench.py", "features_bench.py", "training_bench.py"]

if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    selected = sys.argv[1:] or BENCHES
    for script in selected:
        runpy.run_path(str(here / script), run_name="__main__")
