"""Launch: clone a template with overrides and enqueue it, or a whole sweep, all or nothing.

Two steps. `plan_launch` only reads: it validates every override, name, tag, image and the queue
before anything is written, and builds the exact clone requests (the full hyperparameter tree,
merged here because tasks.clone's `new_task_hyperparams` replaces the tree). `execute_launch`
writes: one tasks.clone per run (each carrying a unique launch token as a system tag, so a
retried clone whose response was lost is found, not duplicated) and one tasks.enqueue_many for the
whole sweep. Any failure, or Ctrl-C, removes every draft of the batch; if the server stays down the
error lists exactly which runs exist.
"""

from __future__ import annotations

import copy
import itertools
import json
import secrets
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ak_remote.clearml_api import Client, Doc
from ak_remote.contract import (
    BATCH_TAG_PREFIX,
    DEFAULT_PROJECT,
    DEFAULT_TEMPLATE_PROJECT,
    LAUNCH_TAG_PREFIX,
    RUN_TAG,
    SWEEP_TAG_PREFIX,
    job_tag,
)
from ak_remote.contract import check_queue_name as contract_queue_name
from ak_remote.errors import AkRemoteError, InternalError, ServerError, UsageError
from ak_remote.launcher.templates import Template, resolve_template
from ak_remote.params import SECTION, format_value, parse_assignments, parse_sweep

SWEEP_ID_AT_LAUNCH = "sw-<drawn at launch>"
MAX_RUNS = 500  # a bigger sweep is almost surely a typo; split it
MAX_NAME_LENGTH = 200
MAX_TAG_LENGTH = 100
MAX_TAGS = 50
MAX_IMAGE_LENGTH = 300

Progress = Callable[[str], None]


# -- input checks (pure) ---------------------------------------------------------------------


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text)


def check_name(name: str, option: str = "--name") -> str:
    """A run or project name: stripped, non-empty, printable, at most 200 characters.

    Raises UsageError naming `option`.
    """
    text = name.strip()
    if not text:
        raise UsageError(f"{option} is empty", f"give a name, or leave {option} out")
    if _has_control(text):
        raise UsageError(f"{option} {name!r} contains control characters", "use printable text")
    if len(text) > MAX_NAME_LENGTH:
        raise UsageError(
            f"{option} is {len(text)} characters long", f"keep it under {MAX_NAME_LENGTH}"
        )
    return text


def check_tags(tags: Sequence[str]) -> list[str]:
    """User tags: split on commas, stripped, deduplicated; raises UsageError for bad ones.

    A leading '-' or '__$' would turn the tag into a filter operator on the server.
    """
    result: list[str] = []
    for item in tags:
        for raw in item.split(","):
            tag = raw.strip()
            if not tag:
                continue
            if _has_control(tag):
                raise UsageError(f"tag {raw!r} contains control characters", "use printable text")
            if tag.startswith(("-", "__$")):
                raise UsageError(
                    f"tag {tag!r} starts with {tag[:3] if tag.startswith('__$') else '-'}",
                    "ClearML reads that as a filter operator; start tags with a letter or digit",
                )
            if len(tag) > MAX_TAG_LENGTH:
                raise UsageError(
                    f"tag {tag[:20]!r}... is {len(tag)} characters long",
                    f"keep tags under {MAX_TAG_LENGTH}",
                )
            if tag not in result:
                result.append(tag)
    if len(result) > MAX_TAGS:
        raise UsageError(f"{len(result)} tags given", f"give at most {MAX_TAGS}")
    return result


def check_image(image: str) -> str:
    """A Docker image reference: one word, not an option. Raises UsageError."""
    text = image.strip()
    if (
        not text
        or any(c.isspace() for c in text)
        or _has_control(text)
        or text.startswith("-")
        or len(text) > MAX_IMAGE_LENGTH
    ):
        raise UsageError(
            f"invalid image {image!r}", "pass one image reference, such as registry/name:tag"
        )
    return text


def check_queue_name(queue: str | None) -> str:
    if queue is None or not queue.strip():
        raise UsageError(
            "no queue given",
            "pass -q/--queue QUEUE, or set AK_REMOTE_QUEUE; list them: ak-remote queues list",
        )
    return contract_queue_name(queue.strip())


def sweep_points(axes: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    """The Cartesian product of the sweep axes, in the order given (one empty point without)."""
    names = list(axes)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes.values())]


# -- the plan (reads only) -------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchRequest:
    """What the user asked for, as typed."""

    template: str
    queue: str | None
    sets: Sequence[str] = ()
    sweep: Sequence[str] = ()
    docker: str | None = None
    name: str | None = None
    tags: Sequence[str] = ()
    project: str = DEFAULT_PROJECT
    template_project: str = DEFAULT_TEMPLATE_PROJECT
    create_queue: bool = False


@dataclass
class PlannedRun:
    """One run to create: its name, overrides, tags and the clone request's fields."""

    index: int
    name: str
    overrides: dict[str, str]  # parameter -> canonical text, what differs from the template
    values: dict[str, str]  # every General parameter as the run will see it
    tags: list[str]
    system_tags: list[str]
    token: str  # the launch token (a system tag), unique per run
    clone_fields: dict[str, Any]  # new_task_* fields of tasks.clone (project filled at execution)


@dataclass
class LaunchPlan:
    """Everything a launch will create, decided before the first write."""

    template: Template
    queue_name: str
    queue_id: str | None  # None: --create-queue will create it
    project_name: str
    project_id: str | None  # None: the project will be created
    batch: str
    sweep_id: str | None
    runs: list[PlannedRun]
    image: str | None

    def describe(self) -> dict[str, Any]:
        """A JSON-able account of what would be created (used by --dry-run)."""
        described = {
            "template": {"id": self.template.id, "name": self.template.name},
            "queue": {
                "name": self.queue_name,
                "id": self.queue_id,
                "create": self.queue_id is None,
            },
            "project": {
                "name": self.project_name,
                "id": self.project_id,
                "create": self.project_id is None,
            },
            "image": self.image,
            "sweep_id": self.sweep_id,
            "runs": [
                {
                    "name": run.name,
                    "overrides": run.overrides,
                    "parameters": run.values,
                    "tags": run.tags,
                    "clone_request": {"task": self.template.id, **run.clone_fields},
                }
                for run in self.runs
            ],
        }
        if self.sweep_id is None:
            return described
        # The sweep id is drawn when the runs are created: a dry run shows where it goes, never
        # an id the real launch will not have.
        text = json.dumps(described).replace(self.sweep_id, SWEEP_ID_AT_LAUNCH)
        return dict(json.loads(text))


def _new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


def _summary(overrides: Mapping[str, str], limit: int = 120) -> str:
    from ak_remote.datasets.secrets import mask_credentials

    text = mask_credentials(" ".join(f"{k}={v}" for k, v in overrides.items()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refuse_secrets(request: LaunchRequest) -> None:
    """Refuse credentials in any value written to the server (parameters, name, tags), checked
    on the raw text so that no later message can echo them. Raises UsageError."""
    from ak_remote.datasets.secrets import refuse_credentials

    for option, items in (("--set", request.sets), ("--sweep", request.sweep)):
        for item in items:
            refuse_credentials(option, item)
    refuse_credentials("--name", request.name or "")
    for tag in request.tags:
        refuse_credentials("--tags", tag)


def _refuse_template_secrets(template: Template, overridden: set[str]) -> None:
    """A template value with credentials would be copied into every run. Raises UsageError."""
    from ak_remote.datasets.secrets import refuse_credentials

    for key, value in template.values().items():
        if key not in overridden:
            try:
                refuse_credentials(f"template {template.name}'s {key}", value)
            except UsageError as exc:
                raise UsageError(
                    exc.message,
                    f"override it (--set {key}=...), or reset the template with "
                    "`ak-remote templates sync`; " + (exc.hint or ""),
                ) from None


def plan_launch(client: Client, request: LaunchRequest) -> LaunchPlan:
    """Validate the request against the server and build the runs; writes nothing.

    Raises UsageError for any bad input (unknown parameter, wrong type, unknown queue...),
    ServerError when the server cannot be asked.
    """
    # Everything that needs no server first, so typos fail fast and offline.
    _refuse_secrets(request)
    queue_name = check_queue_name(request.queue)
    sets = parse_assignments(request.sets)
    axes = parse_sweep(request.sweep)
    both = sorted(set(sets) & set(axes))
    if both:
        raise UsageError(
            f"{', '.join(both)} given both in --set and --sweep", "give each parameter once"
        )
    points = sweep_points(axes)
    if len(points) > MAX_RUNS:
        raise UsageError(
            f"the sweep has {len(points)} runs", f"launch at most {MAX_RUNS} at once; split it"
        )
    name = check_name(request.name) if request.name is not None else None
    tags = check_tags(request.tags)
    image = check_image(request.docker) if request.docker is not None else None
    project_name = check_name(request.project, "--project")

    template = resolve_template(client, request.template, request.template_project)
    params = template.params
    _refuse_template_secrets(template, {params.get(k).name for k in [*sets, *axes]})

    def canonical(key: str, raw: str) -> tuple[str, str]:
        spec = params.get(key)
        return spec.name, format_value(spec.parse(raw))

    fixed = dict(canonical(k, v) for k, v in sets.items())
    sweep_axes: dict[str, list[str]] = {}
    for key, values in axes.items():
        spec_name = params.get(key).name
        if spec_name in fixed or spec_name in sweep_axes:
            raise UsageError(f"{spec_name} given twice", "give each parameter once")
        sweep_axes[spec_name] = [canonical(key, v)[1] for v in values]
        if len(set(sweep_axes[spec_name])) != len(values):
            raise UsageError(f"--sweep {key} repeats a value", "give each value once")
    points = sweep_points(sweep_axes)
    if template.job is not None:
        _check_datasets(client, template, [{**template.values(), **fixed, **p} for p in points])

    queue = (
        client.find_queue(queue_name)
        if request.create_queue
        else client.require_queue(
            queue_name, fixes="pass --create-queue to create it, or `ak-remote queues apply`"
        )
    )
    project_id = client.find_project(project_name)

    batch = _new_id("")
    sweep_id = _new_id("sw-") if sweep_axes else None
    base_tags = [RUN_TAG, *tags]
    if sweep_id:
        base_tags.append(f"{SWEEP_TAG_PREFIX}{sweep_id}")
    template_values = template.values()
    job_tags = [job_tag(template.job.name)] if template.job else []
    container = None
    if image is not None:
        container = {**(template.task.get("container") or {}), "image": image}

    runs = []
    for index, point in enumerate(points):
        overrides = {**fixed, **point}
        if name is not None:
            run_name = name if not point else f"{name} [{_summary(point)}]"
        else:
            run_name = f"{template.name} {_summary(overrides)}".strip()
        token = f"{LAUNCH_TAG_PREFIX}{batch}-{index}"
        system_tags = [f"{BATCH_TAG_PREFIX}{batch}", token, *job_tags]
        tree = merged_hyperparams(template.task.get("hyperparams") or {}, overrides, template)
        clone_fields: dict[str, Any] = {
            "new_task_name": run_name[:MAX_NAME_LENGTH],
            "new_task_tags": base_tags,
            "new_task_system_tags": system_tags,
            "new_task_hyperparams": tree,
            "new_task_comment": (
                f"Launched by ak-remote from template {template.name} ({template.id})"
                + (f", sweep {sweep_id}" if sweep_id else "")
                + (f": {_summary(overrides, 400)}" if overrides else "")
            ),
        }
        if container is not None:
            clone_fields["new_task_container"] = container
        runs.append(
            PlannedRun(
                index=index,
                name=run_name[:MAX_NAME_LENGTH],
                overrides=overrides,
                values={**template_values, **overrides},
                tags=base_tags,
                system_tags=system_tags,
                token=token,
                clone_fields=clone_fields,
            )
        )
    return LaunchPlan(
        template=template,
        queue_name=queue_name,
        queue_id=str(queue["id"]) if queue else None,
        project_name=project_name,
        project_id=project_id,
        batch=batch,
        sweep_id=sweep_id,
        runs=runs,
        image=image or (template.task.get("container") or {}).get("image"),
    )


def _check_datasets(client: Client, template: Template, runs: Sequence[Mapping[str, str]]) -> None:
    """Every run's dataset is one an agent can fetch; raises UsageError before any write."""
    from ak_remote.datasets.references import check_for_agent

    job = template.job
    assert job is not None
    checked: set[str] = set()
    for values in runs:
        reference = values.get("dataset", "")
        if reference in checked:
            continue
        checked.add(reference)
        ref = check_for_agent(reference, job.family, job.kind)
        if ref.kind == "clearml" and not client.get_tasks(ids=[ref.value], only_fields=["id"]):
            raise UsageError(
                f"no ClearML dataset {ref.value} on the server",
                "check the id with `clearml-data list`",
            )


def merged_hyperparams(
    tree: Mapping[str, Any], overrides: Mapping[str, str], template: Template
) -> dict[str, Any]:
    """The template's whole hyperparameter tree with the overrides applied (a deep copy).

    tasks.clone replaces the tree with what it is given, so every section and every parameter
    not overridden must be passed along unchanged.
    """
    merged: dict[str, Any] = copy.deepcopy(dict(tree))
    section = merged.setdefault(SECTION, {})
    for key, value in overrides.items():
        entry = dict(section.get(key) or {})
        if not entry:  # a parameter the template predates: describe it as sync would
            spec = template.params.get(key)
            entry = {"section": SECTION, "name": key, "type": spec.type, "description": spec.help}
        entry["value"] = value
        section[key] = entry
    return merged


# -- execution (writes, all or nothing) ------------------------------------------------------


@dataclass
class LaunchResult:
    """The runs created and queued."""

    plan: LaunchPlan
    task_ids: list[str]
    queue_id: str
    project_id: str
    urls: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "template": self.plan.template.id,
            "queue": self.plan.queue_name,
            "queue_id": self.queue_id,
            "project": self.plan.project_name,
            "project_id": self.project_id,
            "sweep_id": self.plan.sweep_id,
            "runs": [
                {"id": task_id, "name": run.name, "overrides": run.overrides, "url": url}
                for task_id, run, url in zip(self.task_ids, self.plan.runs, self.urls, strict=False)
            ],
        }


def _rollback(client: Client, plan: LaunchPlan, created: Sequence[str]) -> tuple[list[str], bool]:
    """Remove every run of the batch; returns (ids still there, whether the server was asked).

    Looks the batch up by its system tag too, which finds clones whose response was lost.
    """
    ids = list(created)
    reachable = True
    try:
        batch_tag = f"{BATCH_TAG_PREFIX}{plan.batch}"
        for task in client.get_tasks(system_tags=[batch_tag], only_fields=["id", "system_tags"]):
            if batch_tag in (task.get("system_tags") or []) and str(task["id"]) not in ids:
                ids.append(str(task["id"]))
    except ServerError:
        reachable = False
    if not ids:
        return [], reachable
    try:
        failed = client.delete_many(ids, force=True)
    except ServerError:
        return ids, False
    return failed, reachable


def execute_launch(
    client: Client, plan: LaunchPlan, progress: Progress | None = None
) -> LaunchResult:
    """Create the queue/project if needed, clone every run, enqueue them all in one request.

    All or nothing: on any failure or Ctrl-C the runs of this batch are deleted. Raises
    ServerError saying what failed and what (if anything) remains on the server.
    """
    say = progress or (lambda _text: None)
    created: list[str] = []
    total = len(plan.runs)
    try:
        queue_id = plan.queue_id or client.create_queue(plan.queue_name, tags=[RUN_TAG])
        project_id = plan.project_id or client.ensure_project(plan.project_name)
        for run in plan.runs:
            fields = {**run.clone_fields, "new_task_project": project_id}
            task_id = client.clone_task(plan.template.id, run.token, fields)
            created.append(task_id)
            say(f"created {len(created)}/{total}: {task_id} {run.name}")
        enqueued, refused = client.enqueue_many(created, queue_id)
        missing = [i for i in created if i not in enqueued]
        if refused or missing:
            reasons = "; ".join(f"{i}: {msg}" for i, msg in refused.items()) or "no answer"
            raise ServerError(
                f"the server did not enqueue {len(missing)} of {total} runs ({reasons})"
            )
    except (Exception, KeyboardInterrupt) as exc:
        try:
            left, reachable = _rollback(client, plan, created)
        except KeyboardInterrupt:
            # A second Ctrl-C while cleaning up (a hanging server): stop, and say what may remain.
            left, reachable = list(created), False
        raise _launch_error(exc, plan, created, left, reachable) from exc
    say(f"queued {total} run{'s' if total != 1 else ''} on {plan.queue_name}")
    urls = [client.task_url({"id": i, "project": project_id}) for i in created]
    return LaunchResult(plan, created, queue_id, project_id, urls)


def _launch_error(
    exc: BaseException,
    plan: LaunchPlan,
    created: Sequence[str],
    left: Sequence[str],
    reachable: bool,
) -> BaseException:
    if isinstance(exc, KeyboardInterrupt):
        if left:
            return ServerError(
                f"interrupted; these runs could not be removed: {', '.join(left)}",
                f"when the server answers: `ak-remote abort --delete {' '.join(left)}`",
            )
        return exc  # the CLI reports Ctrl-C; nothing is left behind
    cause = exc.message if isinstance(exc, AkRemoteError) else f"{type(exc).__name__}: {exc}"
    where = f"after {len(created)} of {len(plan.runs)} runs were created"
    if not isinstance(exc, AkRemoteError):
        # A bug, not an outage: say so, with what the rollback left behind.
        leftover = f"; left on the server: {', '.join(left)}" if left else "; nothing was left"
        return InternalError(
            f"launch failed {where}: {cause}{leftover}",
            "this is a bug: rerun with --debug and report it",
        )
    if not left and reachable:
        return ServerError(
            f"launch failed {where}: {cause}; removed them all, nothing was launched",
            "try again; `ak-remote doctor` checks the server",
        )
    if not left:
        return ServerError(
            f"launch failed {where}: {cause}; the server stopped answering while cleaning up. "
            f"Runs of this launch carry the system tag {BATCH_TAG_PREFIX}{plan.batch}",
            "when the server answers, check the project for drafts of this launch; "
            "`ak-remote doctor` checks the connection",
        )
    unconfirmed = (
        ""
        if reachable
        else f"; a run whose creation was not confirmed carries the system tag "
        f"{BATCH_TAG_PREFIX}{plan.batch}"
    )
    return ServerError(
        f"launch failed {where}: {cause}; these runs exist and could not be removed: "
        f"{', '.join(left)}{unconfirmed}",
        "when the server answers, remove them with "
        f"`ak-remote abort --delete {' '.join(left)}` (or in the Web UI)",
    )


def launch(
    client: Client, request: LaunchRequest, progress: Progress | None = None
) -> LaunchResult:
    """Plan and execute in one call (the library entry point)."""
    return execute_launch(client, plan_launch(client, request), progress)


def task_summary(task: Doc) -> str:
    return f"{task.get('id')} {task.get('name')} [{task.get('status')}]"
