"""Controller CPU per trial: the job's real oracle (wine's AutoKeras space), ask + tell + save.

No training and no server: this is the part of a controller's work that grows with the number
of trials (Bayesian optimisation refits its Gaussian process on every result), which bounds how
many trials a second one controller can hand out.

    .venv/bin/python benchmarks/search_oracle_cost.py [--trials 64] [--tuners greedy,random]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--tuners", default="greedy,random,bayesian")
    args = parser.parse_args()
    from ak_remote.catalog import get_job
    from ak_remote.runtime import data as data_module
    from ak_remote.runtime.settings import Settings
    from ak_remote.search.oracle import KerasTunerOracle
    from ak_remote.search.runner import build_oracle

    job = get_job("structured-classifier")
    marks = sorted({8, 64, args.trials})
    print(f"ms per trial (ask + tell + save), wine's AutoKeras space, {args.trials} trials")
    warnings.filterwarnings("ignore")  # scikit-learn's GP convergence notes, one per fit
    for tuner in args.tuners.split(","):
        values = job.params.resolve(
            {"tuner": tuner, "max_trials": str(args.trials), "max_samples": "120"}
        )
        settings = Settings.from_values(values)
        data = data_module.load(settings.dataset, job.family, job.kind, settings.target)
        split = data_module.split(data, 42, 0.2, 0.2, 120)
        with tempfile.TemporaryDirectory() as tmp:
            run = SimpleNamespace(job=job, settings=settings, run_dir=Path(tmp))
            oracle = KerasTunerOracle(build_oracle(run, data, split))
            costs: list[float] = []
            for n in range(args.trials):
                started = time.perf_counter()
                answer = oracle.ask("worker0")
                if answer.kind != "trial":
                    break
                oracle.tell(answer.trial_id, (n * 7919 % 1000) / 1000.0)
                costs.append((time.perf_counter() - started) * 1000)
        row = []
        for mark in marks:
            window = costs[max(0, mark - 8) : mark]
            if window:
                row.append(f"trials {mark - 7}-{mark}: {statistics.median(window):7.1f}")
        print(f"{tuner:<9} ran {len(costs):>4}  " + "  ".join(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
