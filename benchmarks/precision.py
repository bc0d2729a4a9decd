"""Training speed per `precision` policy, side by side in one run, on whatever device is here.

Runs the image-classifier job (ClearML offline, one trial) once per policy with the same data,
seed and epochs, and compares the final fit's steps per second: steps per epoch from Keras'
progress line, seconds per epoch from the wall times of its TensorBoard epoch events (the first
epoch, which includes tracing, left out). On a CPU, mixed precision is expected to be slower
(Keras emulates float16 there); on a GPU with tensor cores it should be faster. With
`nvidia-smi` on the PATH it also samples GPU utilisation while each run trains.

Usage: python benchmarks/precision.py [--epochs 8] [--policies float32,mixed_float16]
       [--job image-classifier] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = re.compile(r"^(\d+)/\1 - ", re.MULTILINE)  # Keras' epoch line: "45/45 - 0s - 7ms/step"


def gpu_sampler(stop: threading.Event, samples: list[float]) -> None:
    while not stop.wait(0.5):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if out and out[0].isdigit():
            samples.append(float(out[0]))


def final_fit_epoch_times(folder: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    return [event.wall_time for event in events.Tensors("epoch_loss")]


def run(job: str, policy: str, epochs: int, sets: list[str], workdir: Path) -> dict[str, float]:
    script = ROOT / "jobs" / f"{job.replace('-', '_')}.py"
    args = [sys.executable, str(script), "--offline", "--run-dir", str(workdir / policy)]
    fixed = ["max_trials=1", f"epochs={epochs}", "early_stopping_patience=0", "histogram_freq=0"]
    for item in [*fixed, *sets]:
        args += ["--set", item]
    args += ["--set", f"precision={policy}"]
    env = {**os.environ, "HOME": str(workdir / "home"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    samples: list[float] = []
    stop = threading.Event()
    sampler = None
    if shutil.which("nvidia-smi"):
        sampler = threading.Thread(target=gpu_sampler, args=(stop, samples), daemon=True)
        sampler.start()
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    stop.set()
    if proc.returncode != 0:
        sys.exit(f"{policy}: the job failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    steps_per_epoch = int(STEPS.findall(proc.stdout)[-1])
    epoch_ends = final_fit_epoch_times(workdir / policy / "tensorboard" / "final" / "train")
    # Differences of epoch end times: the first (tracing) epoch is left out.
    epoch_s = statistics.median(b - a for a, b in itertools.pairwise(epoch_ends))
    return {
        "steps_per_s": steps_per_epoch / epoch_s,
        "wall_s": wall,
        "gpu_util": statistics.mean(samples) if samples else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--job", default="image-classifier")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--policies", default="float32,mixed_float16")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args()
    policies = args.policies.split(",")
    with tempfile.TemporaryDirectory(prefix="ak-precision-") as tmp:
        results = {p: run(args.job, p, args.epochs, args.sets, Path(tmp)) for p in policies}
    base = results[policies[0]]["steps_per_s"]
    print(f"{'precision':<16}{'steps/s':>10}{'ratio':>8}{'wall s':>9}{'GPU util %':>12}")
    for policy, r in results.items():
        print(
            f"{policy:<16}{r['steps_per_s']:>10.1f}{r['steps_per_s'] / base:>8.2f}"
            f"{r['wall_s']:>9.1f}{r['gpu_util']:>12.0f}"
        )
    print(f"ratio: steps/s relative to {policies[0]} (above 1: faster)")


if __name__ == "__main__":
    main()
