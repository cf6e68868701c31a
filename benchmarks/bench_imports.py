"""Benchmark: what importing prefect-sacred costs, next to importing Prefect itself.

``prefect.collections`` makes every Prefect process import ``prefect_sacred.blocks``, and every
served flow run imports the experiment's module, so both must cost little beyond Prefect.
Targets (issue 7): ``import prefect_sacred`` within 10% of ``import prefect``;
``import prefect_sacred.blocks`` under 0.5 s more than ``import prefect.blocks.core``.

Each statement runs in a fresh interpreter; the pairs are interleaved so machine noise hits both
sides alike. Reported: the median wall time of the process, and the median import time Python
itself reports (``-X importtime``, the cumulative microseconds of the top-level import).

Run: ``.venv/bin/python benchmarks/bench_imports.py [--runs 9]`` (about a minute).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time

PAIRS = [
    ("import prefect", "import prefect_sacred"),
    ("import prefect.blocks.core", "import prefect_sacred.blocks"),
    ("import prefect", "import prefect_sacred.observers.base"),
    ("import prefect", "from prefect_sacred import Experiment"),
]


def measure(statement: str) -> tuple[float, float]:
    """(process wall seconds, seconds ``-X importtime`` gives the statement's top-level imports)."""
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - began
    # Top-level imports are the lines whose module name is not indented.
    cumulative = sum(
        int(match.group(1))
        for match in re.finditer(r"^import time:\s+\d+ \|\s+(\d+) \| \S", done.stderr, re.M)
    )
    return wall, cumulative / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=9, help="runs of each statement (default 9)")
    args = parser.parse_args()
    for statement in {s for pair in PAIRS for s in pair}:  # warm the file cache
        measure(statement)
    print(
        "| baseline | ours | baseline s (wall / importtime) | ours s (wall / importtime) | ours ÷ baseline |"
    )
    print("|---|---|---|---|---|")
    for baseline, ours in PAIRS:
        base_runs, our_runs = [], []
        for _ in range(args.runs):
            base_runs.append(measure(baseline))
            our_runs.append(measure(ours))
        base_wall = statistics.median(run[0] for run in base_runs)
        base_import = statistics.median(run[1] for run in base_runs)
        our_wall = statistics.median(run[0] for run in our_runs)
        our_import = statistics.median(run[1] for run in our_runs)
        print(
            f"| `{baseline}` | `{ours}` | {base_wall:.2f} / {base_import:.2f} "
            f"| {our_wall:.2f} / {our_import:.2f} "
            f"| {our_import / base_import:.2f}x (+{our_import - base_import:.2f} s) |"
        )


if __name__ == "__main__":
    main()
