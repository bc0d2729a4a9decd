"""Controller cost per event at 100, 500 and 1,000 results, each tuner; and what the faster
Bayesian oracle costs in search quality.

Per event (a trial ends, the next starts): one ask and one tell of the job's real oracle on
wine's AutoKeras space (with its state saved, as the controller does), plus reading the metrics:
parsing one poll answer of `--in-flight` trial tasks (their last_metrics, as the server sends
them) and the finished trial's per-epoch curve into the median rule's table. The oracle is first
given N results (the warm-start path, cheap), then 8 events are timed at that size. No server
and no training: this is the part of a controller's work that grows with the results.

Quality: Keras Tuner's own Bayesian oracle and ak-remote's (ak_remote/search/bayesian.py) run
the same number of trials on a smooth synthetic objective of the same space, several seeds;
best objective found, side by side.

    .venv/bin/python benchmarks/search_oracle_cost.py [--sizes 100,500,1000]
        [--tuners random,greedy,bayesian,bayesian-keras-tuner] [--quality-trials 60 --seeds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EPOCHS = 20  # per-epoch points of each trial's curve
EVENTS = 8


def build(tuner: str, max_trials: int, tmp: Path, seed: int = 42) -> Any:
    from ak_remote.catalog import get_job
    from ak_remote.runtime import data as data_module
    from ak_remote.runtime.settings import Settings
    from ak_remote.search.oracle import KerasTunerOracle
    from ak_remote.search.runner import build_oracle

    job = get_job("structured-classifier")
    kt_own = tuner == "bayesian-keras-tuner"
    values = job.params.resolve(
        {
            "tuner": "bayesian" if kt_own else tuner,
            "max_trials": str(max_trials),
            "max_samples": "120",
            "seed": str(seed),
        }
    )
    settings = Settings.from_values(values)
    data = data_module.load(settings.dataset, job.family, job.kind, settings.target)
    split = data_module.split(data, seed, 0.2, 0.2, 120)
    run = SimpleNamespace(job=job, settings=settings, run_dir=tmp)
    return KerasTunerOracle(build_oracle(run, data, split), fast_bayesian=not kt_own)


def synthetic(oracle: Any, seed: int) -> Any:
    """A smooth objective (to maximise) over the space's probability vectors."""
    space = [hp for hp in oracle.oracle.hyperparameters.space if type(hp).__name__ != "Fixed"]
    rng = np.random.RandomState(1000 + seed)
    centre, weight = rng.uniform(0, 1, len(space)), rng.uniform(0.2, 1.0, len(space))

    def score(values: dict[str, Any]) -> float:
        probs = []
        for hp in space:
            value = values.get(hp.name, hp.default)
            try:
                probs.append(hp.value_to_prob(value))
            except (ValueError, TypeError):
                probs.append(hp.value_to_prob(hp.default))
        return float(1.0 - np.sum(weight * (np.array(probs) - centre) ** 2) / len(space))

    return score


def random_values(oracle: Any, rng: np.random.RandomState) -> dict[str, Any]:
    hps = oracle.oracle.hyperparameters.copy()
    values: dict[str, Any] = {}
    for hp in hps.space:
        if hps.is_active(hp):
            values[hp.name] = hp.prob_to_value(rng.uniform())
            hps.values[hp.name] = values[hp.name]
    return values


def poll_answer(in_flight: int, objective: str) -> list[dict[str, Any]]:
    """What one tasks.get_all returns for the trials in flight (last_metrics as the server
    keeps them: per title and series, value, min and max)."""
    import hashlib

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    tasks = []
    for i in range(in_flight):
        metrics = {
            md5("objective by epoch"): {
                md5(objective): {
                    "metric": "objective by epoch",
                    "variant": objective,
                    "value": 0.5,
                    "min_value": 0.1,
                    "max_value": 0.5 + i * 1e-4,
                },
                md5("epoch"): {
                    "metric": "objective by epoch",
                    "variant": "epoch",
                    "value": 3.0,
                    "min_value": 1.0,
                    "max_value": 3.0,
                },
            },
            md5("Summary"): {
                md5("setup seconds"): {"metric": "Summary", "variant": "setup seconds", "value": 9}
            },
        }
        tasks.append(
            {
                "id": f"{i:032x}",
                "status": "in_progress",
                "last_update": "2026-12-07T10:00:00",
                "last_worker": f"agent{i}",
                "last_metrics": metrics,
            }
        )
    return tasks


def event_cost(tuner: str, size: int, in_flight: int) -> dict[str, float]:
    from ak_remote.search import controller as ctl
    from ak_remote.search.backends import objective_of, progress_of

    with tempfile.TemporaryDirectory() as tmp:
        oracle = build(tuner, size + 2 * EVENTS, Path(tmp))
        score = synthetic(oracle, 0)
        rng = np.random.RandomState(0)
        made = 0
        while made < size:
            values = random_values(oracle, rng)
            if oracle.oracle._duplicate(values):
                continue
            oracle.add_result(values, score(values))
            made += 1
        # The median rule's table over `size` finished curves (built once, as a controller
        # started on a saved state does), then one more curve per event.
        search = ctl.Controller(oracle, SimpleNamespace(), parallel=1, median=ctl.MedianRule())
        for n in range(size):
            curve = [[e, 0.5 + 0.01 * e + 1e-5 * n] for e in range(1, EPOCHS + 1)]
            search.trials[str(n)] = ctl.Trial(str(n), "", {}, state="completed", curve=curve)
        search._median_table()
        answer = poll_answer(in_flight, oracle.objective)
        asks, tells, reads = [], [], []
        for event in range(EVENTS):
            started = time.perf_counter()
            got = oracle.ask("worker0")
            asks.append(time.perf_counter() - started)
            if got.kind != "trial":
                break
            started = time.perf_counter()
            oracle.tell(got.trial_id, score(got.values))
            tells.append(time.perf_counter() - started)
            started = time.perf_counter()
            for task in answer:
                objective_of(task)
                progress_of(task, oracle.objective, oracle.direction)
            curve = [[e, 0.4 + 0.01 * e] for e in range(1, EPOCHS + 1)]
            key = f"event{event}"
            search.trials[key] = ctl.Trial(key, "", {}, state="completed", curve=curve)
            search._median_table()
            reads.append(time.perf_counter() - started)
    return {
        "ask": statistics.median(asks),
        "tell": statistics.median(tells) if tells else float("nan"),
        "read": statistics.median(reads) if reads else float("nan"),
    }


def quality(tuner: str, trials: int, seed: int) -> float:
    """Best synthetic objective after `trials` asks (10 random first)."""
    with tempfile.TemporaryDirectory() as tmp:
        oracle = build(tuner, trials, Path(tmp), seed=seed)
        oracle.oracle.num_initial_points = 10
        score = synthetic(oracle, seed)
        best = -1e9
        for _ in range(trials):
            got = oracle.ask("worker0")
            if got.kind != "trial":
                break
            value = score(got.values)
            oracle.tell(got.trial_id, value)
            best = max(best, value)
    return best


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--tuners", default="random,greedy,bayesian,bayesian-keras-tuner")
    parser.add_argument("--keras-tuner-sizes", default="100,500", help="its asks are slow")
    parser.add_argument("--in-flight", type=int, default=512)
    parser.add_argument("--quality-trials", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # scikit-learn's GP convergence notes, one per fit
    sizes = [int(s) for s in args.sizes.split(",")]
    kt_sizes = {int(s) for s in args.keras_tuner_sizes.split(",") if s}
    results: dict[str, Any] = {"cost": {}, "quality": {}}
    print(
        f"seconds per event (ask + tell + reading {args.in_flight} trials' metrics), "
        "wine's AutoKeras space"
    )
    for tuner in args.tuners.split(","):
        row = []
        for size in sizes:
            if tuner == "bayesian-keras-tuner" and size not in kt_sizes:
                row.append(f"{size}: (not run)")
                continue
            cost = event_cost(tuner, size, args.in_flight)
            total = cost["ask"] + cost["tell"] + cost["read"]
            results["cost"].setdefault(tuner, {})[size] = {**cost, "total": total}
            row.append(
                f"{size}: {total:7.3f} (ask {cost['ask']:.3f}, tell {cost['tell']:.3f}, "
                f"read {cost['read']:.3f})"
            )
        print(f"{tuner:<21} " + "   ".join(row), flush=True)
    if args.quality_trials:
        print(f"best synthetic objective after {args.quality_trials} trials (10 random first)")
        for tuner in ("bayesian", "bayesian-keras-tuner", "random"):
            bests = [quality(tuner, args.quality_trials, seed) for seed in range(args.seeds)]
            results["quality"][tuner] = bests
            print(
                f"{tuner:<21} median {statistics.median(bests):.4f}  "
                f"seeds {', '.join(f'{b:.4f}' for b in bests)}",
                flush=True,
            )
    intervals = {8: 600 / 8, 64: 600 / 64, 512: 600 / 512}
    print("paper model, 10-minute trials: seconds between trial ends vs the cost per event")
    for tuner, costs in results["cost"].items():
        cells = []
        for agents, gap in intervals.items():
            worst = max(c["total"] for c in costs.values())
            efficiency = min(1.0, gap / worst)
            cells.append(f"{agents} agents (every {gap:.2f} s): {100 * efficiency:.0f}%")
        print(f"{tuner:<21} " + "  ".join(cells))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
