"""Cold start of `ak-remote --help` side by side with `clearml-task --help`, in one run.

Each command is run N times in a fresh process; we report the median wall time and the ratio.
Usage: python benchmarks/cli_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def median_seconds(argv: list[str], runs: int) -> float:
    subprocess.run(argv, capture_output=True, check=True)  # warm the file cache once
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    ak = [str(bin_dir / "ak-remote"), "--help"]
    clearml_task = shutil.which("clearml-task", path=str(bin_dir)) or "clearml-task"
    ours = median_seconds(ak, args.runs)
    theirs = median_seconds([clearml_task, "--help"], args.runs)
    print(f"{'command':<24}{'median s':>10}")
    print(f"{'ak-remote --help':<24}{ours:>10.3f}")
    print(f"{'clearml-task --help':<24}{theirs:>10.3f}")
    print(f"ratio ak-remote / clearml-task: {ours / theirs:.2f} (goal: < 1, and < 0.3 s absolute)")


if __name__ == "__main__":
    main()
