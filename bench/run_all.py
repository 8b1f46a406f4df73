"""`make bench` / `kfs bench [NAME...]`: every benchmark, each writing bench/results/<name>.json.

Run as a module from the repository root (`python -m bench.run_all`), so `bench` and the test oracles in
`tests.reference` import as packages without path edits.
"""

from __future__ import annotations

import importlib
import sys

BENCHES = ("ingest", "features", "training", "live", "scale")
# Run only when named: the replication over universe seeds takes about 75 minutes on two CPU cores.
ON_REQUEST = ("quality",)


def run_benchmarks(names: list[str] | tuple[str, ...] = ()) -> None:
    unknown = sorted(set(names) - set(BENCHES) - set(ON_REQUEST))
    if unknown:
        raise ValueError(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHES + ON_REQUEST)}")
    for name in names or BENCHES:
        importlib.import_module(f"bench.{name}_bench").main()


if __name__ == "__main__":
    try:
        run_benchmarks(sys.argv[1:])
    except ValueError as error:
        sys.exit(f"kfs bench: error: {error}")
