"""ak-remote's search against ClearML's HyperParameterOptimizer with OptimizerOptuna and its pruner.

Both on the same emulator and the same 2 real clearml-agent daemons, the same task
(structured-classifier on breast_cancer, objective val_loss, `--epochs` epochs) and the same
number of trials, several seeds, side by side:
- ak-remote: `ak-remote launch structured-classifier --parallel 2 --controller local` with
  `tuner=random` and the median rule (its defaults, `--stop-min-trials 3`), on AutoKeras'
  conditional space;
- ClearML: `HyperParameterOptimizer(optimizer_class=OptimizerOptuna)` with Optuna's default
  sampler (TPE) and pruner (MedianPruner), `pool_period_min=0.1`, on a flat version of the same
  space as its users must write it (every hyperparameter of the space a parameter range,
  conditions dropped), its trials a script that trains the candidate with the same runtime and
  reports `objective by epoch`/val_loss every epoch (what Optuna prunes on).
Reported: compute-seconds (sum of trial tasks' durations, server times) and wall time until the
search first comes within 1 % of the best val_loss either reached, epochs trained, best.

    .venv/bin/python benchmarks/search_vs_optuna.py [--seeds 2] [--trials 10] [--epochs 9]

Needs `optuna` (the `bench` extra: pip install -e '.[bench]').
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

TRIAL_SCRIPT = r"""
import json, sys
from clearml import Task
task = Task.init(project_name="bench", task_name="flat trial", reuse_last_task_id=False)
setup = json.loads(open(TYPES_FILE).read())
general = (task.get_parameters_as_dict() or {}).get("General") or {}
values = {}
for name, kind in setup["types"].items():
    raw = general.get(name)
    if raw is None:
        continue
    text = str(raw)
    values[name] = {"bool": lambda t: t == "True", "int": lambda t: int(float(t)),
                    "float": float, "str": str}[kind](text)
import keras
from ak_remote.catalog import get_job
from ak_remote.runtime import data as data_module
from ak_remote.runtime.settings import Settings
from ak_remote.runtime.training import build_automodel
job = get_job("structured-classifier")
settings = Settings.from_values(job.params.resolve(setup["params"]))
data = data_module.load(settings.dataset, job.family, job.kind, settings.target)
split = data_module.split(data, settings.seed, settings.test_split, settings.validation_split,
                          settings.max_samples)
keras.utils.set_random_seed(settings.seed)
logger = task.get_logger()
class Report(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        logger.report_scalar("objective by epoch", "val_loss", float(logs["val_loss"]), epoch + 1)
import tempfile
automodel = build_automodel(job, settings, data, tempfile.mkdtemp(), None, candidate=values,
                            trial="0")
automodel.fit(data.x[split.train], data.y[split.train],
              validation_data=(data.x[split.val], data.y[split.val]), epochs=settings.epochs,
              batch_size=settings.batch_size, verbose=0,
              callbacks=[Report(), keras.callbacks.EarlyStopping(patience=10**6)])
task.close()
"""

HPO_SCRIPT = r"""
import json, sys
from clearml import Task
from clearml.automation import HyperParameterOptimizer
from clearml.automation import DiscreteParameterRange, UniformIntegerParameterRange
from clearml.automation import UniformParameterRange
from clearml.automation.optuna import OptimizerOptuna
import optuna
template, setup_file, trials, epochs, seed = sys.argv[1:6]
setup = json.loads(open(setup_file).read())
ranges = []
for item in setup["space"]:
    name = "General/" + item["name"]
    if item["kind"] == "choice":
        ranges.append(DiscreteParameterRange(name, item["values"]))
    elif item["kind"] == "int":
        ranges.append(UniformIntegerParameterRange(name, item["min"], item["max"], item["step"]))
    else:
        ranges.append(UniformParameterRange(name, item["min"], item["max"]))
task = Task.init(project_name="bench", task_name="hpo optuna", task_type=Task.TaskTypes.optimizer,
                 reuse_last_task_id=False)
optimizer = HyperParameterOptimizer(
    base_task_id=template, hyper_parameters=ranges,
    objective_metric_title="objective by epoch", objective_metric_series="val_loss",
    objective_metric_sign="min_global", optimizer_class=OptimizerOptuna,
    execution_queue="gpu", max_number_of_concurrent_tasks=2, total_max_jobs=int(trials),
    pool_period_min=0.1, max_iteration_per_job=int(epochs), min_iteration_per_job=2,
    optuna_sampler=optuna.samplers.TPESampler(seed=int(seed)),
    optuna_pruner=optuna.pruners.MedianPruner(),
)
optimizer.start()  # the optimizer here, its trials enqueued for the agents
optimizer.wait()
optimizer.stop()
print("RESULT done")
"""


def flat_space(params: dict[str, str]) -> list[dict[str, Any]]:
    """AutoKeras' space for the job, every hyperparameter a flat range (conditions dropped)."""
    from types import SimpleNamespace

    from ak_remote.catalog import get_job
    from ak_remote.runtime import data as data_module
    from ak_remote.runtime.settings import Settings
    from ak_remote.search.runner import build_oracle

    job = get_job("structured-classifier")
    settings = Settings.from_values(job.params.resolve(params))
    data = data_module.load(settings.dataset, job.family, job.kind, settings.target)
    split = data_module.split(
        data, settings.seed, settings.test_split, settings.validation_split, settings.max_samples
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = SimpleNamespace(job=job, settings=settings, run_dir=Path(tmp))
        space = build_oracle(run, data, split).hyperparameters.space
    out = []
    for hp in space:
        kind = type(hp).__name__
        if kind == "Fixed":
            continue
        if kind == "Choice":
            out.append({"name": hp.name, "kind": "choice", "values": list(hp.values)})
        elif kind == "Boolean":
            out.append({"name": hp.name, "kind": "choice", "values": [True, False]})
        elif kind == "Int":
            out.append(
                {"name": hp.name, "kind": "int", "min": hp.min_value, "max": hp.max_value,
                 "step": hp.step or 1}
            )  # fmt: skip
        else:
            out.append({"name": hp.name, "kind": "float", "min": hp.min_value, "max": hp.max_value})
    return out


def value_type(item: dict[str, Any]) -> str:
    if item["kind"] == "int":
        return "int"
    if item["kind"] == "float":
        return "float"
    first = item["values"][0]
    return {bool: "bool", int: "int", float: "float"}.get(type(first), "str")


def start_agents(emulator: Emulator, n: int, work: Path) -> list[subprocess.Popen[bytes]]:
    agents = []
    for i in range(n):
        env = agent_env(emulator, {"CLEARML_WORKER_ID": f"bench-{i}"})
        with (work / f"agent-{i}.log").open("wb") as log:
            agents.append(
                subprocess.Popen(
                    [str(AGENT_BIN), "daemon", "--queue", "gpu", "--foreground"],
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
    """SIGTERM to each agent's process group (it stops its task), then SIGKILL."""
    for agent in agents:
        for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(agent.pid, sig)
                agent.wait(wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue


def trial_tasks(emulator: Emulator, ids: set[str]) -> list[dict[str, Any]]:
    """Each trial's start and end as the server received them (its first `tasks.started` and
    its first `tasks.completed`/`stopped`/`failed`: a controller may touch a task again after
    it ended, which moves the task's own `completed` field), and its best val_loss."""
    from ak_remote.search.backends import _metric_entries

    started: dict[str, float] = {}
    ended: dict[str, float] = {}
    for request in emulator.requests:
        task = request.body.get("task") if isinstance(request.body, dict) else None
        if task not in ids or request.status != 200:
            continue
        if request.endpoint == "tasks.started":
            started.setdefault(task, request.time)
        elif request.endpoint in ("tasks.completed", "tasks.stopped", "tasks.failed"):
            ended.setdefault(task, request.time)
    rows = []
    for task_id in ids:
        entry = _metric_entries(emulator.get_task(task_id), "objective by epoch").get("val_loss")
        if task_id not in started or task_id not in ended or entry is None:
            continue
        rows.append(
            {
                "start": started[task_id],
                "end": ended[task_id],
                "best": float(entry["min_value"]),
                "epochs": int(entry.get("count") or 0),
            }
        )
    return rows


def run_ours(emulator: Emulator, params: dict[str, str], trials: int, work: Path) -> set[str]:
    before = set(emulator.state.tasks)
    argv = [str(Path(sys.executable).parent / "ak-remote"), "launch", "structured-classifier"]
    argv += ["-q", "gpu", "--parallel", "2", "--controller", "local", "--stop-min-trials", "3"]
    for key, value in {**params, "tuner": "random", "max_trials": str(trials)}.items():
        argv += ["--set", f"{key}={value}"]
    env = {**os.environ, **emulator.env(), "HOME": str(work)}
    proc = subprocess.run(argv, env=env, cwd=work, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"ak-remote's search failed:\n{proc.stderr[-3000:]}")
    return {
        i
        for i in set(emulator.state.tasks) - before
        if any(t.startswith("ak-remote-trial:") for t in emulator.state.tasks[i]["system_tags"])
    }


def run_hpo(
    emulator: Emulator, params: dict[str, str], trials: int, seed: int, work: Path
) -> set[str]:
    space = flat_space(params)
    setup = {"params": params, "space": space, "types": {s["name"]: value_type(s) for s in space}}
    setup_file = work / "setup.json"
    setup_file.write_text(json.dumps(setup))
    script = work / "flat_trial.py"
    script.write_text(f"TYPES_FILE = {str(setup_file)!r}\n" + TRIAL_SCRIPT)
    env = {**os.environ, **emulator.env(), "HOME": str(work)}
    code = (
        "from clearml import Task\n"
        f"t = Task.create(project_name='bench', task_name='flat template', script={str(script)!r},"
        " add_task_init_call=False)\n"
        "print('RESULT', t.id)\n"
    )
    made = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    template = made.stdout.split("RESULT", 1)[1].split()[0]
    hpo = work / "hpo.py"
    hpo.write_text(HPO_SCRIPT)
    before = set(emulator.state.tasks)
    argv = [sys.executable, str(hpo), template, str(setup_file), str(trials)]
    argv += [params["epochs"], str(seed)]

    def spawned() -> set[str]:
        return {
            i
            for i in set(emulator.state.tasks) - before
            if emulator.state.tasks[i].get("type") != "optimizer"
        }

    with (work / "hpo.log").open("wb") as log:
        proc = subprocess.Popen(
            argv, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        # Its optimizer thread has been seen to spin on after its last trial ended (clearml
        # 2.1.12, optuna 5.0.0); the trials are what is measured, so it is stopped once they
        # all ended.
        deadline = time.monotonic() + 3600
        while proc.poll() is None and time.monotonic() < deadline:
            ended = [i for i in spawned() if emulator.state.tasks[i]["status"] in ENDED]
            if len(ended) >= trials:
                break
            time.sleep(2)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    return spawned()


ENDED = ("completed", "stopped", "failed")


def summarise(rows: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    start = min(r["start"] for r in rows)
    for row in sorted(rows, key=lambda r: r["end"]):
        if row["best"] <= threshold:
            when = row["end"]
            compute = sum(max(0.0, min(r["end"], when) - r["start"]) for r in rows)
            return {"compute_s": compute, "wall_s": when - start}
    return {"compute_s": None, "wall_s": None}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = []
    for seed in range(1, args.seeds + 1):
        params = {
            "dataset": "breast_cancer",
            "objective": "val_loss",
            "epochs": str(args.epochs),
            "seed": str(seed),
            "histogram_freq": "0",
            "early_stopping_patience": "0",
            "export_formats": "keras",
        }
        work = Path(tempfile.mkdtemp(prefix="bench-optuna-"))
        print(f"seed {seed}: work folder {work}", flush=True)
        emulator = Emulator(config_dir=work).start()
        emulator.create_queue("gpu")
        agents = start_agents(emulator, 2, work)
        try:
            env = {**os.environ, **emulator.env(), "HOME": str(work)}
            subprocess.run(
                [str(Path(sys.executable).parent / "ak-remote"), "templates", "sync",
                 "--image", "ak-remote-worker:test-cpu"],
                env=env, cwd=work, capture_output=True, check=True,
            )  # fmt: skip
            runs = {
                "ak-remote random + median rule": run_ours(emulator, params, args.trials, work),
                "HPO + OptimizerOptuna (pruner)": run_hpo(
                    emulator, params, args.trials, seed, work
                ),
            }
            rows = {name: trial_tasks(emulator, ids) for name, ids in runs.items()}
        finally:
            stop_agents(agents)
            emulator.stop()
        threshold = min(r["best"] for found in rows.values() for r in found) * 1.01
        for name, found in rows.items():
            got = summarise(found, threshold)
            total = sum(r["end"] - r["start"] for r in found)
            result = {
                "seed": seed,
                "method": name,
                "trials": len(found),
                "best": min(r["best"] for r in found),
                "compute_total_s": total,
                "epochs": sum(r["epochs"] for r in found),
                **got,
            }
            results.append(result)
            reached = (
                "not reached"
                if got["compute_s"] is None
                else f"{got['compute_s']:.0f} compute-s, {got['wall_s']:.0f} s wall"
            )
            print(
                f"seed {seed} {name:<32} trials {len(found):>3} epochs {result['epochs']:>4} "
                f"best {result['best']:.4f} compute {total:6.0f} s; within 1 %: {reached}",
                flush=True,
            )
    for name in {r["method"] for r in results}:
        mine = [r for r in results if r["method"] == name and r["compute_s"] is not None]
        if mine:
            print(
                f"{name:<32} median to within 1 %: "
                f"{statistics.median(r['compute_s'] for r in mine):.0f} compute-s, "
                f"{statistics.median(r['wall_s'] for r in mine):.0f} s wall "
                f"({len(mine)}/{args.seeds} seeds reached it)"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
