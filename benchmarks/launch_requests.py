"""ClearML requests per launched run: `ak-remote launch` sweep vs a plain SDK loop.

Both launch the same 50 runs (seed 1..50 of the structured-classifier template) against one
emulator, each in a fresh process (so the login is counted too), and the emulator counts every
API request it receives. Goal for ak-remote: at most 1.2 requests per run.

    .venv/bin/python benchmarks/launch_requests.py [--runs 50]
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.emulator.server import Emulator  # noqa: E402

SDK_LOOP = """
import sys
from clearml import Task
template = Task.get_task(task_id=sys.argv[1])
for seed in range(1, int(sys.argv[2]) + 1):
    task = Task.clone(source_task=template, name=f"sdk seed={seed}")
    task.set_parameter("General/seed", seed)
    Task.enqueue(task, queue_name="bench")
"""


def measure(
    emulator: Emulator, argv: list[str], env: dict[str, str]
) -> tuple[int, float, dict[str, int]]:
    """Run argv in a fresh process; the API requests it made, its wall time, per endpoint."""
    emulator.reset_log()
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{argv[:3]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    api = [r.endpoint for r in emulator.requests if not r.endpoint.startswith("fileserver.")]
    return len(api), elapsed, dict(collections.Counter(api))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    runs = args.runs

    home = Path(tempfile.mkdtemp(prefix="ak-remote-bench-"))
    emulator = Emulator(config_dir=home / "clearml").start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "AK_REMOTE_"))}
        env.update(emulator.env(), HOME=str(home), PYTHONPATH=str(ROOT))
        cli = [sys.executable, "-m", "ak_remote"]
        subprocess.run([*cli, "templates", "sync"], env=env, capture_output=True, check=True)
        emulator.create_queue("bench")
        template = next(
            t["id"]
            for t in emulator.state.tasks.values()
            if "ak-remote-job:structured-classifier" in t["system_tags"]
        )
        seeds = ",".join(str(i) for i in range(1, runs + 1))
        ours = measure(
            emulator,
            [*cli, "launch", "structured-classifier", "-q", "bench", "--sweep", f"seed={seeds}"],
            env,
        )
        sdk = measure(emulator, [sys.executable, "-c", SDK_LOOP, template, str(runs)], env)
        queued = len(emulator.state.queue_by_name("bench")["entries"])  # type: ignore[index]
        assert queued == 2 * runs, f"expected {2 * runs} queued runs, found {queued}"
    finally:
        emulator.stop()

    print(f"ClearML API requests to launch {runs} runs (counted by the emulator, login included)\n")
    print(f"{'approach':<58} {'requests':>8} {'per run':>8} {'wall s':>7}")
    for name, (count, elapsed, _) in (
        ("ak-remote launch --sweep (clone+overrides, enqueue_many)", ours),
        ("SDK loop: Task.clone + set_parameter + Task.enqueue", sdk),
    ):
        print(f"{name:<58} {count:>8} {count / runs:>8.2f} {elapsed:>7.1f}")
    for name, (_, _, endpoints) in (("ak-remote", ours), ("SDK loop", sdk)):
        detail = ", ".join(f"{k} {v}" for k, v in sorted(endpoints.items(), key=lambda i: -i[1]))
        print(f"\n{name}: {detail}")
    per_run = ours[0] / runs
    print(
        f"\ngoal <= 1.2 requests per run: {'met' if per_run <= 1.2 else 'MISSED'} ({per_run:.2f})"
    )


if __name__ == "__main__":
    main()
