"""Launching a parallel search from the laptop (`launch JOB --parallel N`).

`launch JOB -q gpu --parallel N` is a launch of one run, the *search* (the controller), checked
exactly as a launch is (template, parameters, GPU queue) before anything is created. The search
task is a clone of the job template carrying `Search/spec` (role controller, the GPU queue, the
template to clone for trials); it is enqueued on the controller queue (a CPU queue, `services`
by default), or run in this terminal with `--controller local`. Its trials are its children.
Reading a search back is ak_remote.search.read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ak_remote.clearml_api import Client
from ak_remote.contract import (
    SEARCH_SECTION,
    SEARCH_TAG,
    SUMMARY_FILE,
)
from ak_remote.errors import AkRemoteError, UsageError
from ak_remote.launcher.launch import (
    LaunchPlan,
    LaunchRequest,
    LaunchResult,
    execute_launch,
    plan_launch,
)
from ak_remote.search.spec import (
    CONTROLLER,
    DEFAULT_LOST_AFTER_S,
    DEFAULT_MAX_RETRIES,
    LOCAL_BACKEND,
    SearchRules,
    SearchSpec,
    check_parallel,
)
from ak_remote.summary import RunSummary

CONTROLLER_QUEUE_ENV = "AK_REMOTE_CONTROLLER_QUEUE"
DEFAULT_CONTROLLER_QUEUE = "services"  # ClearML's own name for CPU-only service agents
Progress = Callable[[str], None]


def default_controller_queue() -> str:
    return os.environ.get(CONTROLLER_QUEUE_ENV, "").strip() or DEFAULT_CONTROLLER_QUEUE


@dataclass
class SearchPlan:
    """A checked search launch: the controller run, its spec and where it runs."""

    plan: LaunchPlan
    spec: SearchSpec
    controller_queue: str | None  # None: in this terminal
    controller_queue_id: str | None
    warnings: list[str]

    @property
    def max_trials(self) -> int:
        return int(self.plan.runs[0].values["max_trials"])


def plan_search(
    client: Client,
    request: LaunchRequest,
    parallel: int,
    controller_queue: str | None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    lost_after_s: float = DEFAULT_LOST_AFTER_S,
    rules: SearchRules | None = None,
) -> SearchPlan:
    """Check everything a search launch needs; writes nothing. Raises UsageError/ServerError.

    `controller_queue` None means the controller runs in this terminal.
    """
    check_parallel(parallel)
    if request.sweep:
        raise UsageError(
            "--parallel spreads one search over agents; it cannot be combined with --sweep",
            "launch the sweep without --parallel, or one search per setting",
        )
    plan = plan_launch(client, request)
    run = plan.runs[0]
    check_parallel(parallel, int(run.values["max_trials"]))
    warnings: list[str] = []
    queue_id: str | None = None
    if controller_queue is not None:
        queue = client.require_queue(
            controller_queue,
            "controller queue",
            "create it (ak-remote queues apply), pass --controller-queue QUEUE, "
            "or run the controller here with --controller local",
        )
        queue_id = str(queue["id"])
    workers = client.get_workers()

    def serving(name: str, qid: str | None) -> int:
        """How many workers serve the queue (by id, or by name for a queue not yet made)."""
        return sum(
            any(
                q.get("id") == qid or q.get("name") == name
                for q in (w.get("queues") or [])
                if isinstance(q, dict)
            )
            for w in workers
        )

    trial_agents = serving(plan.queue_name, plan.queue_id)
    if controller_queue is not None and controller_queue == plan.queue_name:
        # The controller runs for the whole search and holds the agent it runs on: with one
        # agent its trials would wait for ever (nothing says so).
        if trial_agents < 2:
            raise UsageError(
                f"the controller and its trials would share the queue {controller_queue!r}, "
                f"which {trial_agents} agent(s) serve: the controller would hold the agent its "
                "trials wait for, for ever",
                "run the controller on a CPU queue (--controller-queue services), or here "
                f"(--controller local), or start a second agent on {controller_queue!r}",
            )
        warnings.append(
            f"the controller takes one of the {trial_agents} agents of {controller_queue!r}: "
            f"at most {trial_agents - 1} trial(s) run at once "
            "(--controller-queue services keeps them all for trials)"
        )
    elif controller_queue is not None and not serving(controller_queue, queue_id):
        warnings.append(
            f"no worker serves the controller queue {controller_queue!r}: the search waits "
            f"until one does (ak-remote agent up -q {controller_queue} --cpu-only)"
        )
    if not trial_agents:
        warnings.append(
            f"no worker serves {plan.queue_name!r} yet: trials wait until an agent does "
            f"(ak-remote agent up -q {plan.queue_name})"
        )
    spec = SearchSpec(
        role=CONTROLLER,
        parallel=parallel,
        queue_id=plan.queue_id or "",
        queue_name=plan.queue_name,
        template_id=plan.template.id,
        project_id=plan.project_id or "",
        max_retries=max_retries,
        lost_after_s=lost_after_s,
        container=run.clone_fields.get("new_task_container"),
    )
    (rules or SearchRules()).apply(spec)
    if spec.warm_start:
        check_warm_start(client, spec.warm_start, plan.template.name, run.values)
    name = f"search {run.name}"[:200]
    run.name = name
    run.clone_fields["new_task_name"] = name
    run.clone_fields["new_task_system_tags"] = [*run.system_tags, SEARCH_TAG]
    run.clone_fields["new_task_comment"] = (
        f"{run.clone_fields.get('new_task_comment', '')}; a search of {parallel} parallel "
        f"trial(s) on {plan.queue_name}"
    )
    return SearchPlan(plan, spec, controller_queue, queue_id, warnings)


def check_warm_start(client: Client, search_id: str, job: str, values: Mapping[str, Any]) -> None:
    """A warm start's source must be a search of the same job with a saved state; its data
    and search space are checked by the controller, which has the data. Raises UsageError."""
    from ak_remote.contract import SEARCH_CONTROLLER_ARTIFACT, is_task_id, job_of

    if str(values.get("tuner")) == "hyperband":
        raise UsageError(
            "--warm-start works with tuner=random, bayesian or greedy",
            "Hyperband's brackets start from new random candidates: drop --warm-start",
        )
    if not is_task_id(search_id):
        raise UsageError(
            f"--warm-start {search_id!r} is not a task id",
            "give the id of an earlier search (ak-remote status --project PROJECT lists them)",
        )
    found = client.get_tasks(
        ids=[search_id], only_fields=["system_tags", "status", "execution.artifacts"]
    )
    if not found or SEARCH_TAG not in (found[0].get("system_tags") or []):
        raise UsageError(
            f"--warm-start {search_id} is not a search", "give a search launched with --parallel"
        )
    task = found[0]
    if job_of(task.get("system_tags")) != job:
        raise UsageError(
            f"--warm-start {search_id} searched job {job_of(task.get('system_tags'))}, not {job}"
        )
    artifacts = (task.get("execution") or {}).get("artifacts") or []
    if not any(a.get("key") == SEARCH_CONTROLLER_ARTIFACT for a in artifacts):
        raise UsageError(
            f"--warm-start {search_id} saved no search state (no trial finished)",
            "warm-start from a search that has results",
        )


def finish_spec(client: Client, search: SearchPlan) -> SearchSpec:
    """Create the trial queue/project if the plan says so; the spec with their ids."""
    plan = search.plan
    from ak_remote.contract import RUN_TAG

    queue_id = plan.queue_id or client.create_queue(plan.queue_name, tags=[RUN_TAG])
    project_id = plan.project_id or client.ensure_project(plan.project_name)
    plan.queue_id, plan.project_id = queue_id, project_id
    return replace(search.spec, queue_id=queue_id, project_id=project_id)


def controller_plan(search: SearchPlan, spec: SearchSpec) -> LaunchPlan:
    """The launch plan that creates the search task (with its `Search/spec`), on the controller
    queue when it has one (a controller run in a terminal has none)."""
    plan = search.plan
    run = plan.runs[0]
    tree = dict(run.clone_fields["new_task_hyperparams"])
    tree[SEARCH_SECTION] = spec.hyperparam_section()
    run.clone_fields["new_task_hyperparams"] = tree
    if search.controller_queue is None:
        return plan
    return replace(plan, queue_name=search.controller_queue, queue_id=search.controller_queue_id)


__all__ = ["SearchPlan", "plan_search"]


@dataclass(frozen=True)
class SearchOptions:
    """The search flags of `launch`, as typed (None: not given)."""

    parallel: int | None
    controller_queue: str | None = None
    controller_where: str | None = None  # "queue", "local" or None (queue)
    max_retries: int | None = None
    lost_after: float | None = None
    rules: SearchRules = field(default_factory=SearchRules)

    @property
    def local(self) -> bool:
        return self.controller_where == "local"


def check_search(client: Client, request: LaunchRequest, options: SearchOptions) -> SearchPlan:
    """Check a search launch's flags and everything it needs; writes nothing.

    Raises UsageError (flags that need --parallel, a local controller given a queue, and every
    check of `plan_search`), ServerError.
    """
    if options.parallel is None:
        given = options.rules.given()
        raise UsageError(
            f"{', '.join(given) if given else '--controller, --controller-queue, --max-retries'}"
            f"{'' if given else ' and --lost-after'} need --parallel N"
        )
    if options.local and options.controller_queue:
        raise UsageError("--controller local runs here: drop --controller-queue")
    return plan_search(
        client,
        request,
        options.parallel,
        None if options.local else (options.controller_queue or default_controller_queue()),
        DEFAULT_MAX_RETRIES if options.max_retries is None else options.max_retries,
        DEFAULT_LOST_AFTER_S if options.lost_after is None else options.lost_after,
        options.rules,
    )


def describe(search: SearchPlan) -> dict[str, Any]:
    """What a dry run shows: the launch plan and the search's own settings."""
    return {
        **search.plan.describe(),
        "search": {
            "parallel": search.spec.parallel,
            "max_trials": search.max_trials,
            "trial_queue": search.plan.queue_name,
            "controller": search.controller_queue or "local",
            "max_retries": search.spec.max_retries,
            "lost_after_s": search.spec.lost_after_s,
            **SearchRules().describe(search.spec),
        },
    }


def enqueue_search(client: Client, search: SearchPlan, progress: Progress) -> LaunchResult:
    """Create the trial queue/project if needed, then the search task on its controller queue."""
    return execute_launch(client, controller_plan(search, finish_spec(client, search)), progress)


def run_local_controller(client: Client, search: SearchPlan, say: Progress) -> RunSummary:
    """The controller as a job process here; trials still go to the queue.

    The search task is made exactly as for a controller queue (a clone of the job template
    carrying `Search/spec`), then run on this machine instead of an agent (the job attaches to
    it: CLEARML_TASK_ID), so a search stopped here continues through the server with
    `ak-remote resume SEARCH -q services`, as a queued one does. Returns the search's
    summary.json; raises RunFailedError (saying how to resume) when the search did not complete.
    """
    from ak_remote.catalog import get_job
    from ak_remote.contract import RUN_HERE_ENV
    from ak_remote.launcher import local_run

    spec = finish_spec(client, search)
    plan = controller_plan(search, spec)
    run = plan.runs[0]
    fields = {**run.clone_fields, "new_task_project": plan.project_id}
    search_id = client.clone_task(plan.template.id, run.token, fields)
    say(f"search {search_id}: {client.task_url({'id': search_id, 'project': plan.project_id})}")
    job = get_job(plan.template.name)
    run_dir = local_run.new_run_dir(job)
    say(f"Running the search controller here (run folder {run_dir}); Ctrl-C stops it")
    try:
        result = local_run.run_job(
            job,
            run.overrides,
            run_dir,
            offline=False,
            project=plan.project_name,
            task_name=run.name,
            env={"CLEARML_TASK_ID": search_id, RUN_HERE_ENV: "1"},
        )
    except AkRemoteError as exc:
        exc.hint = (
            f"it continues through the server: ak-remote resume {search_id} -q services "
            f"(if it still shows running, ak-remote abort {search_id} first)"
        )
        raise
    return result.summary


def resume_local_spec(run_dir: Path, parallel: int | None, max_trials: int) -> Path:
    """The spec file a local parallel search resumes with (`run --resume`), `parallel` changed
    when given. Raises UsageError for a folder whose controller did not run here."""
    spec_file = run_dir / "search_spec.json"
    if not spec_file.is_file():  # the controller of a search on the server ran here
        from ak_remote.summary import read_summary

        search_id = read_summary(run_dir / SUMMARY_FILE).task_id or "SEARCH_ID"
        raise UsageError(
            f"{run_dir} is the folder of search {search_id}, whose trials ran on agents",
            f"it continues through the server: ak-remote resume {search_id} -q services "
            f"(if it still shows running, ak-remote abort {search_id} first)",
        )
    spec = SearchSpec.from_file(spec_file)
    if spec.role != CONTROLLER or spec.backend != LOCAL_BACKEND:
        raise UsageError(
            f"{run_dir} is the folder of a search whose trials ran on agents",
            "resume it through the server: ak-remote resume SEARCH_ID -q services",
        )
    if parallel is not None and parallel != spec.parallel:
        spec = replace(spec, parallel=check_parallel(parallel, max_trials))
        spec_file.write_text(spec.to_json() + "\n")
    return spec_file


@dataclass
class Grown:
    """A search given more trials or another parallelism."""

    task_id: str
    name: str
    status: str  # before the change
    max_trials: int
    parallel: int
    resumed: bool  # enqueued again (it had ended); else its running controller picks it up

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.task_id,
            "name": self.name,
            "previous_status": self.status,
            "max_trials": self.max_trials,
            "parallel": self.parallel,
            "resumed": self.resumed,
        }


def grow_search(
    client: Client, task_id: str, max_trials: int | None, parallel: int | None
) -> Grown:
    """Give the search `task_id` more trials (max_trials in all) or another parallelism.

    Edits the search task's `max_trials` and `Search/spec`: a queued or running controller reads
    them within seconds; an ended search (stopped, failed or completed) is then to be enqueued
    again (the caller resumes it; a completed one is marked stopped first), and its controller
    carries on from its saved state. Raises UsageError (not a search, fewer trials than
    it has, a bad --parallel), ServerError.
    """
    from ak_remote.contract import (
        FINISHED_OK,
        PARAM_SECTION,
        RESUMABLE,
        SEARCH_SPEC_KEY,
    )
    from ak_remote.launcher.runs import check_task_ids

    (task_id,) = check_task_ids([task_id])
    found = client.get_tasks(
        ids=[task_id], only_fields=["id", "name", "status", "system_tags", "hyperparams"]
    )
    if not found or SEARCH_TAG not in (found[0].get("system_tags") or []):
        raise UsageError(
            f"--max-trials and --parallel grow a search; {task_id} is not one",
            "resume a single run without them",
        )
    task = found[0]
    tree = dict(task.get("hyperparams") or {})
    try:
        current = int(tree[PARAM_SECTION]["max_trials"]["value"])
        spec = SearchSpec.from_json(str(tree[SEARCH_SECTION][SEARCH_SPEC_KEY]["value"]))
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"search {task_id} has no readable max_trials or Search/spec") from None
    wanted = current if max_trials is None else max_trials
    if wanted < current:
        raise UsageError(
            f"search {task_id} already has max_trials={current}; a search cannot shrink",
            f"give --max-trials {current} or more",
        )
    spec.parallel = check_parallel(spec.parallel if parallel is None else parallel, wanted)
    tree[PARAM_SECTION]["max_trials"]["value"] = str(wanted)
    tree[SEARCH_SECTION][SEARCH_SPEC_KEY]["value"] = spec.to_json()
    status = str(task.get("status") or "")
    # tasks.edit with force is the one call that edits a task in any status.
    client.edit_task(task_id, {"hyperparams": tree}, force=True)
    ended = status in RESUMABLE or status in FINISHED_OK
    if status in FINISHED_OK:
        # A completed task cannot be enqueued; stopped, it can (its artifacts stay).
        client.call(
            "tasks.stopped",
            {"task": task_id, "force": True, "status_reason": "grown by ak-remote resume"},
        )
    return Grown(task_id, str(task.get("name") or ""), status, wanted, spec.parallel, ended)
