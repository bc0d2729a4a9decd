"""Controller overhead of a parallel search, against ClearML's HyperParameterOptimizer.

Both drive the same trials on the same emulator through the same real clearml-agent daemons
(queue poll 0.5 s): each trial is a tiny ClearML task that sleeps --trial-s seconds and reports
an objective, so what is measured is the controller, not TensorFlow. Reported per controller:
- gap: on each agent, from a trial task's `completed` to the next one's `started` (server
  times), i.e. how long a freed agent waits for its next trial;
- requests per trial: every API request the controller process made, its own task's traffic
  included (SDK reporting, artifact uploads, status checks), divided by trials. Each controller
  process gets credentials of its own and the emulator counts the calls made with them
  (`Emulator.add_client`), so both are counted the same way, at the server.

ak-remote's side is its controller as a `--controller local` search runs it: a process attached to
its search task (CLEARML_TASK_ID), the real `ClearMLBackend`, the search's own reports and state
snapshot after every event, and a Keras Tuner random oracle. ClearML's is
`HyperParameterOptimizer` with its `RandomSearch` optimizer, once with its default
`pool_period_min` (2 minutes) and once with each `--hpo-pool-min` given (users with short trials
set it lower, e.g. 0.1), all in the same run.

    .venv/bin/python benchmarks/search_controller.py [--trials 4] [--parallel 2] [--trial-s 3]
        [--hpo-pool-min default,0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.emulator.agent import AGENT_BIN, agent_env  # noqa: E402
from tests.emulator.server import Emulator  # noqa: E402

TRIAL_SCRIPT = """
import json, os, time
from clearml import Task
task = Task.init(project_name="bench", task_name="trial", reuse_last_task_id=False)
params = task.get_parameters_as_dict() or {}
spec = json.loads((params.get("Search") or {}).get("spec") or "{}")
values = spec.get("candidate") or params.get("General") or {}
time.sleep(float(os.environ.get("BENCH_TRIAL_S", "3")))
score = (sum(ord(c) for c in json.dumps(values, sort_keys=True)) % 997) / 997.0
task.get_logger().report_scalar("objective", "val_accuracy", score, 0)
task.close()
"""

HPO_SCRIPT = """
import json, sys
from clearml import Task
from clearml.automation import HyperParameterOptimizer, RandomSearch
from clearml.automation import UniformIntegerParameterRange, DiscreteParameterRange

template, trials, parallel, pool = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
task = Task.init(project_name="bench", task_name="hpo", task_type=Task.TaskTypes.optimizer,
                 reuse_last_task_id=False)
kwargs = {} if pool == "default" else {"pool_period_min": float(pool)}
optimizer = HyperParameterOptimizer(
    base_task_id=template,
    hyper_parameters=[
        UniformIntegerParameterRange("General/units", 8, 512),
        DiscreteParameterRange("General/optimizer", ["adam", "sgd", "adam_weight_decay"]),
    ],
    objective_metric_title="objective", objective_metric_series="val_accuracy",
    objective_metric_sign="max", optimizer_class=RandomSearch,
    execution_queue="bench", max_number_of_concurrent_tasks=parallel,
    total_max_jobs=trials, **kwargs)
optimizer.start_locally()
optimizer.wait()
optimizer.stop()
print("RESULT " + json.dumps({}))
"""


def gaps(emulator: Emulator, ids: list[str]) -> list[float]:
    """How long a freed agent waited: a trial's start minus the completion that freed its agent.

    Times are the arrival of the trial's own `tasks.started` and `tasks.completed` requests at
    the emulator (a controller may touch a task again after it completed, which moves the
    task's `completed` field)."""
    wanted = set(ids)
    started: dict[str, float] = {}
    completed: dict[str, float] = {}
    for request in emulator.requests:
        task = request.body.get("task") if isinstance(request.body, dict) else None
        if task not in wanted or request.status != 200:
            continue
        if request.endpoint == "tasks.started":
            started.setdefault(task, request.time)
        elif request.endpoint == "tasks.completed":
            completed.setdefault(task, request.time)
    # A freed agent takes the next trial: match each start (after the first `parallel`) with
    # the earliest completion before it not matched yet. Needs no worker attribution.
    starts = sorted(started[t] for t in ids if t in started)
    ends = sorted(completed[t] for t in ids if t in completed)
    result: list[float] = []
    pending = list(ends)
    for start in starts[PARALLEL["n"] :]:
        before = [e for e in pending if e <= start]
        if not before:
            continue
        pending.remove(before[0])
        result.append(start - before[0])
    return result


PARALLEL = {"n": 2}


def start_agents(emulator: Emulator, n: int, work: Path) -> list[subprocess.Popen[bytes]]:
    agents = []
    for i in range(n):
        env = agent_env(emulator, {"CLEARML_WORKER_ID": f"bench-{i}"})
        with (work / f"agent-{i}.log").open("wb") as log:
            agents.append(
                subprocess.Popen(
                    [str(AGENT_BIN), "daemon", "--queue", "bench", "--foreground"],
                    env=env,
                    cwd=work,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    deadline = time.monotonic() + 60
    while len(emulator.state.workers) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    return agents


def stop_agents(agents: list[subprocess.Popen[bytes]]) -> None:
    for agent in agents:
        try:
            os.killpg(agent.pid, signal.SIGINT)
            agent.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(agent.pid, signal.SIGKILL)


def make_template(emulator: Emulator, work: Path) -> str:
    script = work / "trial.py"
    script.write_text(TRIAL_SCRIPT)
    code = (
        "from clearml import Task\n"
        f"t = Task.create(project_name='bench', task_name='template', script={str(script)!r},"
        " add_task_init_call=False)\n"
        "t.set_parameters({'General/units': 64, 'General/optimizer': 'adam'})\n"
        "print('RESULT', t.id)\n"
    )
    env = {**os.environ, **emulator.env()}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.split("RESULT", 1)[1].split()[0]


OURS_SCRIPT = """
import json, sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
import keras_tuner

from ak_remote.catalog import get_job
from ak_remote.clearml_api import client_from_config
from ak_remote.runtime.tracking import Tracker
from ak_remote.search import controller as ctl
from ak_remote.search.backends import ClearMLBackend
from ak_remote.search.oracle import KerasTunerOracle
from ak_remote.search.runner import StateStore, growth_reader, persist
from ak_remote.search.spec import CONTROLLER, SearchSpec

template, queue_id, trials, parallel, work = sys.argv[2:7]
trials, parallel, work = int(trials), int(parallel), Path(work)
tracker = Tracker("bench", "ak-remote controller", offline=False)  # attached: CLEARML_TASK_ID
hp = keras_tuner.HyperParameters()
hp.Int("units", 8, 512)
hp.Choice("optimizer", ["adam", "sgd", "adam_weight_decay"])
oracle = keras_tuner.oracles.RandomSearchOracle(
    objective=keras_tuner.Objective("val_accuracy", "max"),
    max_trials=trials, hyperparameters=hp, seed=1)
oracle._set_project_dir(str(work), "ours")
client = client_from_config()
spec = SearchSpec(role=CONTROLLER, search_id=tracker.task_id, parallel=parallel,
                  queue_id=queue_id, template_id=template, poll_s=0.5)
backend = ClearMLBackend(client, get_job("structured-classifier"), {}, spec, "bench",
                         "val_accuracy", "max")
store = StateStore(work, Path(oracle._project_dir), tracker)

def on_event(kind, controller, trial):  # what the search's own process does after each event
    persist(kind, controller, trial, tracker, store)

controller = ctl.Controller(
    KerasTunerOracle(oracle), backend, parallel, poll_s=0.5, on_event=on_event,
    refresh=growth_reader(client, spec.search_id), stop_requested=backend.stop_requested)
controller.run()
tracker.complete()
ids = [a.handle for t in controller.trials.values() for a in t.attempts]
print("RESULT " + json.dumps({"ids": ids}))
"""


def run_ours(
    emulator: Emulator, template: str, trials: int, parallel: int, work: Path
) -> dict[str, Any]:
    from ak_remote.contract import RUN_HERE_ENV

    env = emulator.add_client("ours")
    queue_id = emulator.state.queue_by_name("bench")["id"]
    search = emulator.create_task("search (ak-remote)", project="bench", type="optimizer")
    script = work / "ours.py"
    script.write_text(OURS_SCRIPT)
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(script), str(ROOT), template, queue_id, str(trials),
         str(parallel), str(work / "ours")],
        env={**os.environ, **env, "CLEARML_TASK_ID": search, RUN_HERE_ENV: "1"},
        capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if out.returncode != 0 or "RESULT " not in out.stdout:
        sys.exit(f"the ak-remote controller failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.split("RESULT ", 1)[1].splitlines()[0])
    return {"calls": emulator.calls_by(env), "wall_s": elapsed, "ids": result["ids"]}


def run_hpo(
    emulator: Emulator, template: str, trials: int, parallel: int, pool: str, work: Path
) -> dict[str, Any]:
    script = work / "hpo.py"
    script.write_text(HPO_SCRIPT)
    env = emulator.add_client(f"hpo{pool.replace('.', '')}")
    before = set(emulator.state.tasks)
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(script), template, str(trials), str(parallel), pool],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if out.returncode != 0 or "RESULT " not in out.stdout:
        sys.exit(f"HyperParameterOptimizer failed:\n{out.stderr[-3000:]}")
    ids = [
        i
        for i in set(emulator.state.tasks) - before
        if emulator.state.tasks[i].get("type") != "optimizer"
        and emulator.state.tasks[i].get("started")
    ]
    return {"calls": emulator.calls_by(env), "wall_s": elapsed, "ids": ids}


def report(name: str, emulator: Emulator, result: dict[str, Any], trials: int) -> None:
    found = gaps(emulator, result["ids"])
    median = statistics.median(found) if found else float("nan")
    worst = max(found) if found else float("nan")
    calls = result["calls"]
    print(
        f"{name:<34} trials {len(result['ids']):>3}  wall {result['wall_s']:7.1f} s  "
        f"gap median {median:6.2f} s  max {worst:6.2f} s  "
        f"requests/trial {len(calls) / max(trials, 1):6.1f}",
        flush=True,
    )
    by_endpoint: dict[str, int] = {}
    for call in calls:
        by_endpoint[call.endpoint] = by_endpoint.get(call.endpoint, 0) + 1
    top = sorted(by_endpoint.items(), key=lambda item: -item[1])
    print("    " + ", ".join(f"{endpoint} {n}" for endpoint, n in top), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--trial-s", type=float, default=3.0)
    parser.add_argument(
        "--hpo-pool-min",
        default="default,0.1",
        help="HyperParameterOptimizer's pool_period_min values to run, comma-separated "
        "('default': its own, 2 minutes; '' for none)",
    )
    args = parser.parse_args()
    os.environ["BENCH_TRIAL_S"] = str(args.trial_s)
    PARALLEL["n"] = args.parallel
    work = Path(tempfile.mkdtemp(prefix="bench-search-"))
    os.environ["HOME"] = str(work)
    emulator = Emulator(config_dir=work).start()
    emulator.create_queue("bench")
    agents = start_agents(emulator, args.parallel, work)
    try:
        template = make_template(emulator, work)
        print(f"{args.trials} trials of {args.trial_s:g} s, {args.parallel} agents (poll 0.5 s)")
        report(
            "ak-remote controller",
            emulator,
            run_ours(emulator, template, args.trials, args.parallel, work),
            args.trials,
        )
        for pool in [p.strip() for p in args.hpo_pool_min.split(",") if p.strip()]:
            result = run_hpo(emulator, template, args.trials, args.parallel, pool, work)
            label = "2 min (default)" if pool == "default" else f"{pool} min"
            report(f"HyperParameterOptimizer, pool {label}", emulator, result, args.trials)
    finally:
        stop_agents(agents)
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
