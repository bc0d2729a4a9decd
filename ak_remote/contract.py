"""What the launcher (laptop side) and the job runtime (worker side) agree on.

One home for the shared vocabulary: the ClearML project and parameter section, the tags that
mark templates and runs, task and run statuses, artifact and file names (the run summary itself
is typed in ak_remote.summary), and the id rule. Both sides import this module; it imports
neither side, nor TensorFlow, nor ClearML.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ak_remote.errors import UsageError

# -- where runs live on the server ------------------------------------------------------------
DEFAULT_PROJECT: Final = "ak-remote"
DEFAULT_TEMPLATE_PROJECT: Final = "ak-remote/templates"
# The hyperparameter section a job's typed parameters live in (the Web UI's "General").
PARAM_SECTION: Final = "General"

# -- tags ----------------------------------------------------------------------------------
RUN_TAG: Final = "ak-remote"  # user tag of every run ak-remote launches
TEMPLATE_TAG: Final = "ak-remote-template"  # system tag of a template task (templates sync)
# System tag naming the template's own id. tasks.clone copies system tags (and the Web UI's Clone
# keeps them), so TEMPLATE_TAG alone is inherited by every clone; a clone gets a new id, so this
# one tag can only be true on the task `templates sync` made.
TEMPLATE_ID_TAG_PREFIX: Final = "ak-remote-template-id:"
JOB_TAG_PREFIX: Final = "ak-remote-job:"  # system tag naming the job (templates and runs)
LAUNCH_TAG_PREFIX: Final = "ak-remote-launch:"  # system tag: one per run, unique (retry look-up)
BATCH_TAG_PREFIX: Final = "ak-remote-batch:"  # system tag: every run of one launch command
SWEEP_TAG_PREFIX: Final = "sweep:"  # user tag: every run of one sweep (filterable in the UI)
REPRODUCES_TAG_PREFIX: Final = "reproduces:"  # user tag of a reproduction: the original's id
# A task's runtime property set whenever ak-remote stops a task (`abort`, a search's controller),
# before the stop: who and when. An agent that pulled the task just before still starts it
# (clearml-agent marks it in_progress again, with force); the job sees this key at its start and
# stops itself. The server's clone does not copy runtime properties and its reset clears them;
# `resume` removes it.
ABORTED_KEY: Final = "ak_remote_aborted"


def job_tag(job_name: str) -> str:
    """The system tag that names a job on templates and runs."""
    return f"{JOB_TAG_PREFIX}{job_name}"


def job_of(tags: object) -> str | None:
    """The job named by a task's system tags, or None."""
    for tag in tags if isinstance(tags, list) else []:
        if isinstance(tag, str) and tag.startswith(JOB_TAG_PREFIX):
            return tag[len(JOB_TAG_PREFIX) :]
    return None


def template_id_tag(task_id: str) -> str:
    """The system tag `templates sync` puts on the template with id `task_id`."""
    return f"{TEMPLATE_ID_TAG_PREFIX}{task_id}"


def is_template(task: Mapping[str, Any]) -> bool:
    """True only for a template `templates sync` made, never for a clone of one."""
    tags = task.get("system_tags")
    tags = tags if isinstance(tags, list) else []
    return TEMPLATE_TAG in tags and template_id_tag(str(task.get("id"))) in tags


def template_tags(tags: object) -> list[str]:
    """The system tags that mark a template (what ak-remote's own clones must not carry)."""
    return [
        t
        for t in (tags if isinstance(tags, list) else [])
        if t == TEMPLATE_TAG or (isinstance(t, str) and t.startswith(TEMPLATE_ID_TAG_PREFIX))
    ]


# -- ClearML task statuses (as the server reports them) ---------------------------------------
CREATED: Final = "created"
QUEUED: Final = "queued"
IN_PROGRESS: Final = "in_progress"
STOPPED: Final = "stopped"
FAILED: Final = "failed"
COMPLETED: Final = "completed"
CLOSED: Final = "closed"
PUBLISHED: Final = "published"
FINAL_STATUSES: Final = frozenset({COMPLETED, FAILED, STOPPED, CLOSED, PUBLISHED})
FINISHED_OK: Final = frozenset({COMPLETED, PUBLISHED, CLOSED})
BAD_STATUSES: Final = frozenset({FAILED, STOPPED})
RESUMABLE: Final = frozenset({STOPPED, FAILED})

# -- run statuses (summary.json "status") ------------------------------------------------------
RUN_RUNNING: Final = "running"
RUN_COMPLETED: Final = "completed"
RUN_FAILED: Final = "failed"
# A parallel search's trial the controller stopped before its last epoch (the median rule, a
# budget, the target): its best objective so far is its result; not a failure.
TRIAL_STOPPED: Final = "stopped"

# -- a trial attempt as a search's controller sees it, whatever ran it (ak_remote.search) -----
# Queued, completed and failed as the server says them; a trial's own state is a run status.
ATTEMPT_QUEUED: Final = QUEUED
ATTEMPT_RUNNING: Final = "running"  # in progress, or started and not yet reported
ATTEMPT_COMPLETED: Final = COMPLETED
ATTEMPT_FAILED: Final = FAILED
ATTEMPT_MISSING: Final = "missing"  # the backend no longer knows the attempt (deleted, lost)
ATTEMPT_STOPPED: Final = "stopped"  # stopped by the controller (early stop, budget, target)
LIVE_STATUSES: Final = frozenset({CREATED, QUEUED, IN_PROGRESS})  # a task not ended yet

# -- files a run writes and the artifact names they are uploaded under -------------------------
SUMMARY_FILE: Final = "summary.json"
INFERENCE_FILE: Final = "inference.json"
PIPELINE_FILE: Final = "pipeline.json"
CHECK_SAMPLES_FILE: Final = "check_samples.npz"
DATA_SPLIT_FILE: Final = "data_split.json"
SEARCH_STATE_ARTIFACT: Final = "search_state"
TENSORBOARD_ARTIFACT: Final = "tensorboard"
# What `pull` fetches beside the models themselves.
MODEL_METADATA: Final = (INFERENCE_FILE, PIPELINE_FILE, CHECK_SAMPLES_FILE)

# -- ids --------------------------------------------------------------------------------------
_ID = re.compile(r"^[0-9a-f]{32}$")


def is_task_id(text: str) -> bool:
    """True for a ClearML id (task, dataset, model): 32 lowercase hex digits."""
    return bool(_ID.match(text))


# -- queue names ----------------------------------------------------------------------------
# ClearML queue names are free text on the server; ak-remote keeps every queue it names, creates
# or serves to what survives a shell, a systemd instance name and a Kubernetes label unquoted:
# one rule, so `launch --create-queue` never makes a queue `agent up` refuses.
QUEUE_NAME_RULE: Final = (
    "letters, digits, '.', '_' or '-', starting with a letter or digit, at most 64"
)
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def is_queue_name(name: str) -> bool:
    """True when `name` follows the one queue-name rule."""
    return bool(_QUEUE_NAME.match(name))


def check_queue_name(name: str) -> str:
    """`name` when it follows the queue-name rule; raises UsageError otherwise."""
    if not is_queue_name(name):
        raise UsageError(f"invalid queue name {name!r}", f"use {QUEUE_NAME_RULE}")
    return name


# -- worker images ----------------------------------------------------------------------------
_IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")


def is_image_id(reference: str) -> bool:
    """True for a full local image ID (`sha256:` and 64 hex digits)."""
    return bool(_IMAGE_ID.match(reference.strip()))


def is_pinned(reference: str) -> bool:
    """True when an image reference names the image's content, not a tag that can move."""
    text = reference.strip()
    return "@sha256:" in text or is_image_id(text)


# -- environment ------------------------------------------------------------------------------
# Set by whatever starts a job process on this machine (`ak-remote run`, a local search's
# controller): the job stops itself when that process dies (runtime/run.py).
PARENT_PID_ENV: Final = "AK_REMOTE_PARENT_PID"
# Set with CLEARML_TASK_ID when a job runs an existing task on this machine without an agent (a
# search's controller run in a terminal): the job then closes the task itself, as an agent would.
RUN_HERE_ENV: Final = "AK_REMOTE_RUN_HERE"


def server_configured(env: Mapping[str, str] | None = None) -> bool:
    """True when ClearML has a server to talk to (env vars or a clearml.conf).

    The CLI and the job runtime use this one rule, so `ak-remote run` and the job it starts agree
    on offline mode.
    """
    env = dict(os.environ) if env is None else env
    if env.get("CLEARML_OFFLINE_MODE", "").lower() in ("1", "true", "yes", "on"):
        return False
    if env.get("CLEARML_API_HOST") or env.get("TRAINS_API_HOST"):
        return True
    config = env.get("CLEARML_CONFIG_FILE") or env.get("TRAINS_CONFIG_FILE")
    if config:
        return Path(config).expanduser().is_file()
    home = Path(env.get("HOME") or Path.home())
    return any((home / name).is_file() for name in ("clearml.conf", "trains.conf"))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def encoded_uri(uri: str) -> str:
    """`uri` with its path percent-encoded (spaces, `=` and the like from task names), as a
    URL must be for curl, a browser or any HTTP client; already-encoded parts stay as they are.

    The SDK records a model's URI with the raw task name in it; ClearML's fileserver decodes
    the path, so the encoded URI names the same file.
    """
    from urllib.parse import quote, unquote, urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return uri
    path = quote(unquote(parts.path), safe="/")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


# -- parallel searches (ak_remote.search) --------------------------------------------------------
SEARCH_TAG: Final = "ak-remote-search"  # system tag of a search (controller) task
SEARCH_OF_PREFIX: Final = "ak-remote-search-of:"  # system tag of every trial/final fit of a search
TRIAL_TAG_PREFIX: Final = "ak-remote-trial:"  # system tag naming the trial id a task trains
FINAL_FIT_TAG: Final = "ak-remote-final-fit"  # system tag of a search's final-fit task
# Hyperparameter section (and its one key) that tells a job process its part in a search.
SEARCH_SECTION: Final = "Search"
SEARCH_SPEC_KEY: Final = "spec"
SEARCH_CONTROLLER_ARTIFACT: Final = "search_controller"  # the controller's state snapshot
# ... and its file in the controller's run folder (a local search resumes from it).
SEARCH_CONTROLLER_FILE: Final = "search_controller.zip"
# What a trial reports every epoch (scalar title; series: the objective's name, and `epoch`), so
# the controller can read each running trial's progress from the task's last_metrics alone.
EPOCH_OBJECTIVE_TITLE: Final = "objective by epoch"
EPOCH_SERIES: Final = "epoch"
SETUP_SERIES: Final = "setup seconds"  # a trial's start to its first epoch (single value)
# A Hyperband trial's best-epoch weights, for the trial that continues it on another agent.
STOPPED_EARLY_TAG: Final = "stopped early"  # user tag of a trial task the controller stopped
TRIAL_WEIGHTS_ARTIFACT: Final = "trial_weights"
TRIAL_WEIGHTS_FILE: Final = "trial.weights.h5"
EPOCHS_FILE: Final = "epochs.json"  # a local trial's per-epoch objective (its run folder)
# What a trial reports: scalar title "objective", series = the objective's name.
OBJECTIVE_TITLE: Final = "objective"
