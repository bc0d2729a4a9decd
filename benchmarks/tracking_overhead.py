"""Tracking overhead: the same AutoKeras search, tracked (ClearML offline + TensorBoard with
histograms) against bare AutoKeras, on the same data and seed. Goal: tracked <= 1.10 x bare.

    .venv/bin/python benchmarks/tracking_overhead.py [--job image-classifier] [--repeats 3]

Each measurement runs in a fresh process (a ClearML main task belongs to its process), the two
modes alternate so drift on a shared machine hits both, and the medians are compared. What is
timed is what tracking adds to a search: from before `Task.init` (tracked) to after
`task.close()` has written the offline session, around the same `AutoModel.fit`; importing
TensorFlow, loading data and exporting the model are the same in both and are left out.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def measure(mode: str, job_name: str, sets: dict[str, str], workdir: Path) -> dict[str, float]:
    """One search in this process; returns its wall time and that of each tracked phase."""
    from ak_remote.catalog import get_job
    from ak_remote.runtime import data as data_module
    from ak_remote.runtime.settings import Settings
    from ak_remote.runtime.training import build_automodel, configure_devices, search

    job = get_job(job_name)
    settings = Settings.from_values(job.params.resolve(sets))
    data = data_module.load(settings.dataset, job.family, job.kind, settings.target)
    split = data_module.split(
        data, settings.seed, settings.test_split, settings.validation_split, settings.max_samples
    )
    configure_devices(settings.gpus)
    import keras

    keras.utils.set_random_seed(settings.seed)
    x, y = data.x[split.train_val], data.y[split.train_val]
    started, cpu_started = time.perf_counter(), time.process_time()
    phases: dict[str, float] = {}
    if mode == "bare":
        automodel = build_automodel(job, settings, data, str(workdir / "autokeras"), None)
        automodel.fit(
            x,
            y,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            validation_split=split.autokeras_validation_split,
            callbacks=[
                keras.callbacks.EarlyStopping(
                    patience=settings.early_stopping_patience, min_delta=1e-4
                )
            ],
            verbose=2,  # as the tracked search() prints
        )
    else:
        from ak_remote.runtime.tracking import Tracker

        inside = _time_callbacks()

        tracker = Tracker("ak-remote-benchmark", f"{job_name} overhead", offline=True)
        tracker.connect_parameters(job.params.to_strings(job.params.resolve(sets)))
        phases["task_init"] = time.perf_counter() - started
        search(
            job,
            settings,
            data,
            x,
            y,
            split.autokeras_validation_split,
            str(workdir),
            None,
            tracker,
        )
        phases["search"] = time.perf_counter() - started - phases["task_init"]
        phases["in_callbacks"] = inside[0]  # tracking's own work during the search
        mark = time.perf_counter()
        tracker.upload("tensorboard", workdir / "tensorboard")
        phases["upload_tensorboard"] = time.perf_counter() - mark
        mark = time.perf_counter()
        tracker.complete()
        phases["close"] = time.perf_counter() - mark
    # CPU seconds of all the process' threads: less sensitive than wall time to other work on
    # a shared machine, and it counts ClearML's background threads.
    cpu = time.process_time() - cpu_started
    return {"seconds": time.perf_counter() - started, "cpu_seconds": cpu, **phases}


def _time_callbacks() -> list[float]:
    """Sum the wall time spent inside the job's TensorBoard/ClearML callback (graphs,
    histograms, scalars, checkpoints): tracking's own work, measured where it happens, which
    a busy machine disturbs less than the difference of two whole runs."""
    import functools

    from ak_remote.runtime import callbacks

    total = [0.0]
    for name in (
        "on_train_begin",
        "on_epoch_end",
        "on_train_batch_begin",
        "on_train_batch_end",
        "on_train_end",
    ):
        original = getattr(callbacks.TensorBoard, name)

        def timed(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            mark = time.perf_counter()
            try:
                return _original(self, *args, **kwargs)
            finally:
                total[0] += time.perf_counter() - mark

        setattr(callbacks.TensorBoard, name, functools.wraps(original)(timed))
    return total


def _child(args: argparse.Namespace) -> None:
    sets = dict(item.split("=", 1) for item in args.set)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HOME"] = tmp  # the offline session and ClearML state stay in the sandbox
        result = measure(args.mode, args.job, sets, Path(tmp))
    print(json.dumps({"mode": args.mode, **result}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", default="image-classifier")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--set",
        action="append",
        # One trial: the image tuner's second candidate is an ImageNet-sized ResNet50, minutes
        # per epoch on a CPU; the overhead is per epoch and per run, not per candidate.
        default=["max_trials=1", "epochs=15", "max_samples=0", "histogram_freq=1"],
    )
    parser.add_argument("--mode", choices=("bare", "tracked"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        _child(args)
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "AK_REMOTE_"))}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    times: dict[str, list[float]] = {"bare": [], "tracked": []}
    cpu: dict[str, list[float]] = {"bare": [], "tracked": []}
    own: list[float] = []  # tracking's own seconds: Task.init, callbacks, upload, close
    for repeat in range(args.repeats):
        order = ("bare", "tracked") if repeat % 2 == 0 else ("tracked", "bare")
        for mode in order:
            command = [sys.executable, __file__, "--job", args.job, "--mode", mode]
            for item in args.set:
                command += ["--set", item]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"{mode} run failed:\n{done.stderr[-3000:]}")
            result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
            times[mode].append(result["seconds"])
            if mode == "tracked":
                own.append(
                    sum(
                        result[k]
                        for k in ("task_init", "in_callbacks", "upload_tensorboard", "close")
                    )
                )
            cpu[mode].append(result["cpu_seconds"])
            detail = ", ".join(
                f"{k} {v:.2f}" for k, v in result.items() if k not in ("mode", "seconds")
            )
            print(
                f"run {repeat + 1} {mode:8s} {result['seconds']:7.2f} s  {detail}", file=sys.stderr
            )
    print(f"job: {args.job}  settings: {' '.join(args.set)}  repeats: {args.repeats}")
    for mode, label in (("bare", "bare AutoKeras"), ("tracked", "ClearML offline + TensorBoard")):
        runs = ", ".join(f"{t:.2f}" for t in times[mode])
        print(
            f"{label:31s} median {statistics.median(times[mode]):6.2f} s  "
            f"min {min(times[mode]):6.2f} s  ({runs})"
        )
    # On a shared machine the minimum is the least disturbed estimate; both are shown.
    median = statistics.median(times["tracked"]) / statistics.median(times["bare"])
    best = min(times["tracked"]) / min(times["bare"])
    print(f"ratio tracked/bare: median {median:.3f}, min {best:.3f}  (goal <= 1.10)")
    cpu_ratio = statistics.median(cpu["tracked"]) / statistics.median(cpu["bare"])
    print(f"CPU time ratio tracked/bare (median): {cpu_ratio:.3f}")
    # Tracking's own work, timed where it happens, over the bare search's time.
    inside = statistics.median(own)
    print(
        f"time inside tracking (median): {inside:.2f} s; 1 + that / bare median: "
        f"{1 + inside / statistics.median(times['bare']):.3f}"
    )


if __name__ == "__main__":
    main()
