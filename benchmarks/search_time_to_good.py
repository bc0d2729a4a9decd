"""Time to a good model: compute-seconds and wall time until a search first comes within 1% of the
best objective any method reached, side by side, several seeds.

Methods, all with the same controller and 2 workers: random without stopping, random with the
median rule, Hyperband with weight hand-over, Hyperband without it (every promoted model trained
from scratch: what `tuner=hyperband` did before). Each runs as `ak-remote run --parallel 2` does
(the job script with a controller spec, local worker processes, ClearML offline), on a task
where candidates really differ (structured-classifier on breast_cancer, objective val_loss:
AutoKeras' space spans learning rates from 0.1 to 2e-5). Compute-seconds = the sum of trial
attempts' durations as the controller saw them (state in search_controller.zip); epochs trained
are counted from the trials' own reports.

    .venv/bin/python benchmarks/search_time_to_good.py [--seeds 2] [--epochs 9] [--trials 10]
        [--methods random,random-median,hyperband,hyperband-no-handover] [--json out.json]

Not here: ClearML's HyperParameterOptimizer with OptimizerOptuna (it needs a task per trial on
agents and a flat version of the space; see docs/benchmarks.md for what was and was not run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

METHODS = {
    # name: (tuner, spec fields)
    "random": ("random", {"early_stop": "off"}),
    "random-median": ("random", {"early_stop": "median", "stop_min_trials": 3, "stop_grace": 2}),
    "hyperband": ("hyperband", {"early_stop": "off", "handover": True}),
    "hyperband-no-handover": ("hyperband", {"early_stop": "off", "handover": False}),
}


def run_search(method: str, seed: int, epochs: int, trials: int, work: Path) -> dict[str, Any]:
    tuner, fields = METHODS[method]
    run_dir = work / f"{method}-{seed}"
    spec = {"role": "controller", "backend": "local", "parallel": 2, **fields}
    spec_file = work / f"{method}-{seed}.json"
    spec_file.write_text(json.dumps(spec))
    # Hyperband's schedule sets its trials (epochs 9: 23); max_trials only caps it.
    max_trials = 100 if tuner == "hyperband" else trials
    sets = {
        "dataset": "breast_cancer",
        "objective": "val_loss",
        "tuner": tuner,
        "epochs": epochs,
        "max_trials": max_trials,
        "seed": seed,
        "histogram_freq": 0,
        "early_stopping_patience": 0,
        "export_formats": "keras",
    }
    argv = [sys.executable, str(ROOT / "jobs" / "structured_classifier.py")]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    argv += ["--run-dir", str(run_dir), "--search-spec", str(spec_file), "--offline"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HOME": str(work / "home")}
    started = time.time()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.time() - started
    if proc.returncode != 0:
        raise SystemExit(f"{method} seed {seed} failed:\n{proc.stderr[-3000:]}")
    with zipfile.ZipFile(run_dir / "search_controller.zip") as archive:
        state = json.loads(archive.read("controller.json"))
    events = []  # (wall time the result was known, objective)
    attempts = []  # (started, ended)
    epochs_trained = 0
    for trial in state["trials"]:
        for attempt in trial["attempts"]:
            if attempt.get("started") is not None and attempt.get("ended") is not None:
                attempts.append((attempt["started"], attempt["ended"]))
        if trial.get("objective") is not None and trial["attempts"]:
            events.append((trial["attempts"][-1]["ended"], float(trial["objective"])))
        curve_file = (
            Path(trial["attempts"][-1]["handle"]) / "epochs.json" if trial["attempts"] else None
        )
        if curve_file is not None and curve_file.is_file():
            epochs_trained += len(json.loads(curve_file.read_text())["epochs"])
    return {
        "method": method,
        "seed": seed,
        "start": state["started_at"],
        "events": sorted(events),
        "attempts": attempts,
        "trials": len(state["trials"]),
        "epochs_trained": epochs_trained,
        "search_wall_s": wall,
        "best": min(o for _, o in events),
    }


def time_to(result: dict[str, Any], threshold: float) -> tuple[float, float] | None:
    """(compute-seconds, wall seconds) until the first result <= threshold (val_loss)."""
    for when, objective in result["events"]:
        if objective <= threshold:
            compute = sum(max(0.0, min(end, when) - start) for start, end in result["attempts"])
            return compute, when - result["start"]
    return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--trials", type=int, default=10, help="random search's max_trials")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "home").mkdir()
        for seed in range(1, args.seeds + 1):
            for method in args.methods.split(","):
                result = run_search(method, seed, args.epochs, args.trials, work)
                results.append(result)
                print(
                    f"seed {seed} {method:<22} trials {result['trials']:>3}  epochs "
                    f"{result['epochs_trained']:>4}  best val_loss {result['best']:.4f}  "
                    f"compute {sum(e - s for s, e in result['attempts']):7.1f} s  "
                    f"wall {result['search_wall_s']:6.1f} s",
                    flush=True,
                )
    print("\nuntil within 1% of the best val_loss any method reached (per seed):")
    table: dict[str, list[tuple[float, float] | None]] = {}
    for seed in range(1, args.seeds + 1):
        runs = [r for r in results if r["seed"] == seed]
        threshold = min(r["best"] for r in runs) * 1.01
        for run in runs:
            table.setdefault(run["method"], []).append(time_to(run, threshold))
    for method, reached in table.items():
        got = [r for r in reached if r is not None]
        cells = ", ".join(
            "not reached" if r is None else f"{r[0]:.0f} s/{r[1]:.0f} s" for r in reached
        )
        median = (
            f"median compute {statistics.median(c for c, _ in got):.0f} s, wall "
            f"{statistics.median(w for _, w in got):.0f} s"
            if got
            else "never reached"
        )
        print(f"{method:<22} reached {len(got)}/{len(reached)}; {median}  (compute/wall: {cells})")
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "reached": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
