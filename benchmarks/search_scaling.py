"""Trials per hour of one search with --parallel 1 and --parallel 2 on this machine.

`ak-remote run JOB --parallel P --offline` (the same controller as on agents, with local worker
processes), TensorFlow limited to one thread per worker (TF_NUM_INTRAOP_THREADS=1,
TF_NUM_INTEROP_THREADS=1, OMP_NUM_THREADS=1) so each worker owns a core. The trial phase is
measured from the trials' own records: from the first trial's start to the last trial's end
(start = end - the trial's wall time; end = its summary.json being written). Goal: >= 1.8x.

    .venv/bin/python benchmarks/search_scaling.py [--trials 4] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def trial_span(run_dir: Path) -> tuple[int, float]:
    """(trials, seconds from the first trial's start to the last one's end)."""
    starts, ends = [], []
    for summary in (run_dir / "trials").glob("*/summary.json"):
        record = json.loads(summary.read_text())
        if record.get("status") != "completed":
            continue
        end = summary.stat().st_mtime
        starts.append(end - float(record["wall_time_s"]))
        ends.append(end)
    return len(ends), (max(ends) - min(starts)) if ends else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--job", default="structured-classifier")
    args = parser.parse_args()
    env = {
        **os.environ,
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    env = {k: v for k, v in env.items() if not k.startswith("CLEARML_")}
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        env["HOME"] = tmp
        for parallel in (1, 2):
            run_dir = Path(tmp) / f"p{parallel}"
            argv = [sys.executable, "-m", "ak_remote", "run", args.job, "--offline"]
            argv += ["--set", f"max_trials={args.trials}", "--set", f"epochs={args.epochs}"]
            argv += ["--set", "tuner=random", "--set", "histogram_freq=0"]
            argv += ["--parallel", str(parallel), "--run-dir", str(run_dir)]
            done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"--parallel {parallel} failed:\n{done.stderr[-3000:]}")
            trials, span = trial_span(run_dir)
            rates[parallel] = trials / span * 3600
            print(
                f"--parallel {parallel}: {trials} trials in {span:.1f} s, "
                f"{rates[parallel]:.0f} trials/hour",
                flush=True,
            )
    print(f"speed-up: {rates[2] / rates[1]:.2f} (load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
