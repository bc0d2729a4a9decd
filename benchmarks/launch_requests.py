"""ClearML requests per launched run: `ak-remote launch` sweep vs a plain SDK loop.

Both launch the same 50 runs (seed 1..50 of the structured-classifier template) against one
emulator, each in a fresh process (so the login is counted too), and the emulator counts every
API request it receives. Goal for ak-remote: at most 1.2 requests per run.

With --faults it prints the reliability table instead: a six-run sweep launched while the
emulator injects each fault, and what the server holds afterwards (queued runs, duplicates,
orphan drafts).

    .venv/bin/python benchmarks/launch_requests.py [--runs 50] [--faults]
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
from typing import Any

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


# (fault, endpoints, times, mode, after how many created runs; None: from the start)
FAULTS: list[tuple[str, str, int, str, int | None]] = [
    ("5xx on clone", "tasks.clone", 1, "500", 2),
    ("5xx on clone, twice in a row", "tasks.clone", 2, "500", 2),
    ("503 on clone", "tasks.clone", 1, "503", 2),
    ("timeout on clone (not applied)", "tasks.clone", 1, "timeout", 2),
    ("response dropped after clone applied", "tasks.clone", 1, "drop_response", 2),
    ("responses dropped on 3 clones", "tasks.clone", 3, "drop_response", 0),
    ("5xx on enqueue_many", "tasks.enqueue_many", 1, "500", None),
    ("timeout on enqueue_many", "tasks.enqueue_many", 1, "timeout", None),
    ("response dropped after enqueue_many applied", "tasks.enqueue_many", 1, "drop_response", None),
    ("5xx on reads (tasks.get_all)", "tasks.get_all", 2, "500", None),
    ("server gone mid-sweep (clone keeps failing)", "tasks.clone", 100, "503", 3),
    ("enqueue keeps failing", "tasks.enqueue_many", 100, "500", None),
    (
        "server down for good mid-sweep (cleanup too)",
        "tasks.clone tasks.get_all tasks.delete_many",
        100,
        "503",
        3,
    ),
]


def reliability(home: Path) -> None:
    """Launch a six-run sweep under each fault; report what the server holds afterwards."""
    from ak_remote import contract
    from ak_remote.clearml_api import Client, RetryPolicy
    from ak_remote.contract import LAUNCH_TAG_PREFIX
    from ak_remote.errors import AkRemoteError
    from ak_remote.launcher import templates
    from ak_remote.launcher.launch import LaunchRequest, launch

    print(f"{'fault':<46} {'times':>5} {'outcome':<26} {'queued':>6} {'dupl.':>5} {'drafts':>6}")
    for name, endpoint, times, mode, after in FAULTS:
        emulator = Emulator(config_dir=home / "faults").start()
        try:
            os.environ.update(emulator.env())
            client = Client(policy=RetryPolicy(attempts=4, backoff=0.05))
            templates.sync(client, "ak-remote/templates", "img:1", "")
            emulator.create_queue("gpu")

            def inject(
                e: Emulator = emulator, spec: tuple[str, int, str] = (endpoint, times, mode)
            ) -> None:
                for name in spec[0].split():
                    e.fail_next(name, times=spec[1], mode=spec[2], hold_s=0.3)

            def progress(text: str, when: int | None = after, go: Any = inject) -> None:
                if when and text.startswith(f"created {when}/"):
                    go()

            if not after:
                inject()
            request = LaunchRequest(
                "structured-classifier", "gpu", sweep=["epochs=1,2,3", "tuner=greedy,random"]
            )
            try:
                launch(Client(policy=RetryPolicy(attempts=4, backoff=0.05)), request, progress)
                outcome = "launched, all 6"
            except AkRemoteError as exc:
                outcome = "refused, " + (
                    "nothing left" if "removed them all" in str(exc) else "drafts named in error"
                )
            emulator._faults.clear()
            tasks = [
                t
                for t in emulator.state.tasks.values()
                if contract.TEMPLATE_TAG not in t["system_tags"]
            ]
            tokens = [g for t in tasks for g in t["system_tags"] if g.startswith(LAUNCH_TAG_PREFIX)]
            queued = sum(t["status"] == "queued" for t in tasks)
            orphans = sum(t["status"] == "created" for t in tasks)
            print(
                f"{name:<46} {times:>5} {outcome:<26} {queued:>6} "
                f"{len(tokens) - len(set(tokens)):>5} {orphans:>6}"
            )
        finally:
            emulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--faults", action="store_true", help="print the reliability table")
    args = parser.parse_args()
    runs = args.runs
    if args.faults:
        home = Path(tempfile.mkdtemp(prefix="ak-remote-faults-"))
        os.environ["HOME"] = str(home)
        for key in [k for k in os.environ if k.startswith(("CLEARML_", "AK_REMOTE_"))]:
            del os.environ[key]
        reliability(home)
        return

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
