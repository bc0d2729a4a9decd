"""Template tasks: one ClearML draft per job, recording how an agent runs it.

A template holds the entry point (the git repository and commit when the checkout has a remote,
otherwise the script itself, as `Task.create(script=...)` records it), the worker Docker image and
its arguments, the pinned requirements, and the job's default hyperparameters with their types.
`launch` clones it. `sync` is idempotent: it writes only what differs from the server.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ak_remote import contract
from ak_remote.catalog import JOBS, PROJECT_ROOT, Job, get_job
from ak_remote.clearml_api import Client, Doc
from ak_remote.contract import RUN_TAG, TEMPLATE_TAG, is_task_id
from ak_remote.errors import UsageError
from ak_remote.params import SECTION, ParamSet, ParamSpec, format_value

USER_TAGS = [RUN_TAG, "template"]
LOCK_FILE = "requirements/worker.lock"  # what the CPU worker image installs
GPU_LOCK_FILE = "requirements/worker-gpu.lock"  # the GPU image: tensorflow, not tensorflow-cpu


def job_tag(job: Job) -> str:
    return contract.job_tag(job.name)


def job_of(task: Mapping[str, Any]) -> Job | None:
    """The catalog job a template or run belongs to (from its system tags), or None."""
    name = contract.job_of(task.get("system_tags"))
    return JOBS.get(name) if name else None


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _strip_credentials(url: str) -> str:
    """A remote URL without user:password@ (a token in a remote URL must not reach the server)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.scheme and "@" in parts.netloc:
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


def shared_remote(root: Path) -> str | None:
    """The URL of the checkout's remote when agents on other hosts can clone it, else None.

    A remote that is a path on this machine (a clone of a local folder, as CI makes) is not:
    the job script then travels inside the template instead.
    """
    remotes = (_git(root, "remote") or "").split()
    if not remotes:
        return None
    name = "origin" if "origin" in remotes else remotes[0]
    url = (_git(root, "remote", "get-url", name) or "").strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme and parts.scheme != "file" and parts.netloc:
        return url  # https://, ssh://, git://
    # scp-like syntax, user@host:path or host:path (a colon before any slash)
    head = url.split("/", 1)[0]
    if ":" in head and parts.scheme != "file" and len(head.split(":", 1)[0]) > 1:
        return url
    return None


def lock_for_image(image: str, root: Path = PROJECT_ROOT) -> str:
    """The lock the image was built from: the GPU one for GPU images (docker/build.sh tags)."""
    tag = image.rsplit("/", 1)[-1]
    if "gpu" in tag.lower() and (root / GPU_LOCK_FILE).exists():
        return GPU_LOCK_FILE
    return LOCK_FILE


def pinned_requirements(root: Path = PROJECT_ROOT, lock: str = LOCK_FILE) -> str:
    """A worker lock as `name==version` lines (comments dropped)."""
    path = root / lock
    if not path.exists():
        return ""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text and not text.startswith("-"):
            lines.append(text)
    return "\n".join(lines) + ("\n" if lines else "")


def script_section(job: Job, root: Path = PROJECT_ROOT, lock: str = LOCK_FILE) -> dict[str, Any]:
    """How an agent gets and runs the job's code (git remote + commit + diff, or the script).

    The requirements are the lock the worker image installed: the images run tasks on their
    own interpreter (CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL), so this is the record of what runs.
    """
    requirements = {"pip": pinned_requirements(root, lock)}
    remote = shared_remote(root)
    commit = (_git(root, "rev-parse", "HEAD") or "").strip() if remote else ""
    if remote and commit:
        branch = (_git(root, "rev-parse", "--abbrev-ref", "HEAD") or "").strip()
        return {
            "repository": _strip_credentials(remote),
            "branch": "" if branch == "HEAD" else branch,
            "version_num": commit,
            "entry_point": job.script,
            "working_dir": ".",
            "binary": "python3",
            "diff": _git(root, "diff", "HEAD", "--binary") or "",
            "requirements": requirements,
        }
    script = root / job.script
    if not script.exists():
        raise UsageError(
            f"the job script {job.script} is missing from {root}",
            "run `ak-remote templates sync` from an ak-remote checkout",
        )
    # No remote to clone: the script travels in the task itself, as Task.create(script=...) does.
    return {
        "repository": "",
        "branch": "",
        "version_num": "",
        "entry_point": Path(job.script).name,
        "working_dir": ".",
        "binary": "python3",
        "diff": script.read_text(encoding="utf-8"),
        "requirements": requirements,
    }


def code_warnings(root: Path = PROJECT_ROOT) -> list[str]:
    """What an agent may not be able to reproduce from this checkout (empty: all good)."""
    if shared_remote(root) is None:
        return []  # the scripts travel inside the templates
    commit = (_git(root, "rev-parse", "HEAD") or "").strip()
    warnings = []
    if commit and not (_git(root, "branch", "-r", "--contains", commit) or "").strip():
        warnings.append(
            f"commit {commit[:12]} is on no remote branch: agents cannot check it out; "
            "push it, then sync again"
        )
    if (_git(root, "diff", "HEAD", "--stat") or "").strip():
        warnings.append("uncommitted changes travel in the templates as a diff; commit them")
    return warnings


def hyperparams_for(params: ParamSet) -> dict[str, dict[str, dict[str, str]]]:
    """The job's defaults as ClearML's hyperparameter tree (section General, typed, described)."""
    return {
        SECTION: {
            spec.name: {
                "section": SECTION,
                "name": spec.name,
                "value": format_value(spec.default),
                "type": spec.type,
                "description": spec.help,
            }
            for spec in params.specs
        }
    }


def template_fields(
    job: Job, image: str, docker_args: str, root: Path = PROJECT_ROOT
) -> dict[str, Any]:
    """The task fields a template for `job` should have (the body of tasks.create/edit)."""
    return {
        "name": job.name,
        "type": "training",
        "comment": (
            f"{job.description}. Template kept by `ak-remote templates sync`; "
            f"launch it with `ak-remote launch {job.name} -q QUEUE`."
        ),
        "script": script_section(job, root, lock_for_image(image, root)),
        "container": {"image": image, "arguments": docker_args},
        "hyperparams": hyperparams_for(job.params),
        "tags": list(USER_TAGS),
        "system_tags": [TEMPLATE_TAG, job_tag(job)],
    }


def _differs(want: Any, have: Any) -> bool:
    """Whether `have` lacks anything of `want` (dicts compared on want's keys; '' == missing)."""
    if isinstance(want, Mapping):
        have = have if isinstance(have, Mapping) else {}
        return any(_differs(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return sorted(map(str, want)) != sorted(map(str, have or []))
    if want in ("", None):
        return have not in ("", None)
    return bool(want != have)


def changed_fields(want: Mapping[str, Any], have: Mapping[str, Any]) -> list[str]:
    """The top-level fields of `want` the existing task does not match."""
    changed = []
    for key, value in want.items():
        if key == "hyperparams":
            if _hyperparams_differ(value, have.get("hyperparams") or {}):
                changed.append(key)
        elif key == "system_tags":
            if not set(value) <= set(have.get("system_tags") or []):
                changed.append(key)
        elif _differs(value, have.get(key)):
            changed.append(key)
    return changed


def _hyperparams_differ(want: Mapping[str, Any], have: Mapping[str, Any]) -> bool:
    for section, params in want.items():
        existing = have.get(section) or {}
        if set(existing) != set(params):
            return True
        if _differs(params, existing):
            return True
    return False


@dataclass
class SyncResult:
    """What `sync` did per job: created, updated (with the fields), or unchanged."""

    project: str
    project_id: str
    created: dict[str, str] = field(default_factory=dict)  # job -> task id
    updated: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    unchanged: dict[str, str] = field(default_factory=dict)
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "project_id": self.project_id,
            "created": self.created,
            "updated": {job: {"id": i, "fields": f} for job, (i, f) in self.updated.items()},
            "unchanged": self.unchanged,
            "duplicates": self.duplicates,
            "warnings": self.warnings,
        }


def list_templates(client: Client, project: str) -> list[Doc]:
    """The templates `templates sync` made in `project` (never clones of them)."""
    project_id = client.find_project(project)
    if project_id is None:
        return []
    return [t for t in _tagged(client, project_id) if contract.is_template(t)]


def _tagged(client: Client, project_id: str | None = None) -> list[Doc]:
    """Tasks carrying the template tag: templates, and any clone of one (clones inherit it)."""
    return client.get_tasks(project=project_id, system_tags=[TEMPLATE_TAG])


def _unmarked_original(tasks: Sequence[Doc], job_name: str) -> Doc | None:
    """A template synced before templates named their own id, or one whose marking was lost.

    The original is a draft named after its job, created before any clone of it (a clone is
    renamed by the Web UI, and is queued or run by any other route).
    """
    legacy = [
        t
        for t in tasks
        if job_of(t) is not None
        and job_of(t).name == job_name  # type: ignore[union-attr]
        and t.get("name") == job_name
        and t.get("status") in (contract.CREATED, None)
        and not any(
            str(tag).startswith(contract.TEMPLATE_ID_TAG_PREFIX)
            for tag in t.get("system_tags") or []
        )
    ]
    legacy.sort(key=lambda t: str(t.get("created") or ""))
    return legacy[0] if legacy else None


def _finder(client: Client, project_id: str, job_name: str) -> Callable[[], str | None]:
    def find() -> str | None:
        found = _unmarked_original(_tagged(client, project_id), job_name)
        return str(found["id"]) if found else None

    return find


def _marked(task: Doc, want: Sequence[str]) -> list[str]:
    """The task's system tags with the template's own: stale template-id tags dropped."""
    own = contract.template_id_tag(str(task["id"]))
    kept = [
        str(t)
        for t in task.get("system_tags") or []
        if not str(t).startswith(contract.TEMPLATE_ID_TAG_PREFIX)
    ]
    return kept + [t for t in [*want, own] if t not in kept]


def sync(
    client: Client,
    project: str,
    image: str,
    docker_args: str,
    jobs: Sequence[Job] | None = None,
    root: Path = PROJECT_ROOT,
    progress: Callable[[str], None] | None = None,
) -> SyncResult:
    """Create or update one template per job; writes nothing when all are up to date.

    Raises UsageError (bad image) or ServerError.
    """
    if not image.strip() or any(c.isspace() for c in image):
        raise UsageError(f"invalid image name {image!r}", "pass one reference, e.g. repo/name:tag")
    wanted = {
        job.name: template_fields(job, image, docker_args, root) for job in jobs or JOBS.values()
    }
    project_id = client.ensure_project(project, "ak-remote job templates (drafts agents clone)")
    result = SyncResult(project, project_id, warnings=code_warnings(root))
    tagged = _tagged(client, project_id)
    existing: dict[str, list[Doc]] = {}
    for task in tagged:
        job = job_of(task)
        if job is not None and contract.is_template(task):
            existing.setdefault(job.name, []).append(task)
    for name, want in wanted.items():
        have = existing.get(name) or []
        if not have:
            original = _unmarked_original(tagged, name)
            if original is not None:
                have = [original]
        if len(have) > 1:
            result.duplicates[name] = [str(t["id"]) for t in have[1:]]
        if not have:
            body = {**want, "project": project_id}
            task_id = client.create_task(body, find=_finder(client, project_id, name))
            # Only now is the id known: the tag naming it is what no clone can carry truly.
            client.edit_task(
                task_id, {"system_tags": [*want["system_tags"], contract.template_id_tag(task_id)]}
            )
            result.created[name] = task_id
            if progress:
                progress(f"created template {name} ({task_id})")
            continue
        current = have[0]
        want = {**want, "system_tags": _marked(current, want["system_tags"])}
        changed = changed_fields(want, current)
        if changed:
            client.edit_task(str(current["id"]), {k: want[k] for k in changed}, force=True)
            result.updated[name] = (str(current["id"]), changed)
            if progress:
                progress(f"updated template {name}: {', '.join(changed)}")
        else:
            result.unchanged[name] = str(current["id"])
    return result


@dataclass(frozen=True)
class Template:
    """A task to clone, with the parameters launch validates overrides against."""

    task: Doc
    job: Job | None
    params: ParamSet

    @property
    def id(self) -> str:
        return str(self.task["id"])

    @property
    def name(self) -> str:
        return self.job.name if self.job else str(self.task.get("name") or self.id)

    def values(self) -> dict[str, str]:
        """The template's own General values (text, as stored)."""
        section = (self.task.get("hyperparams") or {}).get(SECTION) or {}
        return {k: str((v or {}).get("value", "")) for k, v in section.items()}


def _params_from_task(task: Mapping[str, Any]) -> ParamSet:
    """Parameters of a task that is not an ak-remote template: names and types as stored."""
    section = (task.get("hyperparams") or {}).get(SECTION) or {}
    specs = []
    for name, entry in section.items():
        kind = str((entry or {}).get("type") or "str")
        kind = kind if kind in ("int", "float", "bool", "list") else "str"
        value = str((entry or {}).get("value", ""))
        try:
            default: Any = ParamSpec(name, kind, value, "").parse(value)
        except UsageError:
            kind, default = "str", value
        specs.append(ParamSpec(name, kind, default, str((entry or {}).get("description") or "")))
    return ParamSet(tuple(specs))


def resolve_template(client: Client, name_or_id: str, project: str) -> Template:
    """The template for a job name (in `project`) or any task id to clone.

    Raises UsageError naming the known jobs, or telling to run `templates sync`.
    """
    text = name_or_id.strip()
    if is_task_id(text):
        task = client.get_task(text)
        job = job_of(task)
        return Template(task, job, job.params if job else _params_from_task(task))
    job = get_job(text)
    # One tag per filter: the server ORs the tags of one filter, so narrow down here.
    # Only what `templates sync` made: clones inherit TEMPLATE_TAG, never the own-id tag.
    found = [
        t
        for t in _tagged(client)
        if contract.is_template(t) and job_tag(job) in (t.get("system_tags") or [])
    ]
    if len(found) > 1:
        project_id = client.find_project(project)
        found = [t for t in found if t.get("project") == project_id] or found
    if not found:
        raise UsageError(
            f"no template for {job.name} on the server",
            f"run `ak-remote templates sync --project {project}` first",
        )
    found.sort(key=lambda t: str(t.get("last_update") or t.get("created") or ""), reverse=True)
    return Template(found[0], job, job.params)
