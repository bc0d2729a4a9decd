"""Command lines for `clearml-agent daemon` processes, and the declarative queue file.

Pure library: no click, no TensorFlow, no ClearML server. The CLI (`ak-remote agent up`,
`ak-remote queues apply`) parses flags, calls these functions and renders the result.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ak_remote.contract import QUEUE_NAME_RULE, check_queue_name, is_queue_name
from ak_remote.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: tomllib's predecessor, if installed
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None

__all__ = [
    "DEFAULT_AGENT",
    "SKIP_ENV_INSTALL",
    "AgentCommand",
    "QueueSpec",
    "build_agent_commands",
    "load_queue_file",
    "parse_gpus",
    "start_agents",
    "stop_agents",
    "supervise_agents",
]

# The agent executable; `("python", "-m", "clearml_agent")` works too where PATH lacks it.
DEFAULT_AGENT: tuple[str, ...] = ("clearml-agent",)

# Run the task on the interpreter the agent already has: the worker images and a host with
# `ak-remote[train,agent]` installed carry every locked dependency, so installing is never needed.
SKIP_ENV_INSTALL = "CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL"

_QUEUE_KEYS = frozenset({"name", "description", "tags"})


@dataclass(frozen=True)
class AgentCommand:
    """One `clearml-agent daemon` process: its argv and the variables added to its environment."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    gpus: str | None = None  # the GPUs this process serves, None when unrestricted or CPU-only

    def shell(self) -> str:
        """The command as one copy-pasteable shell line (what `agent up --print` shows)."""
        assignments = [f"{key}={shlex.quote(value)}" for key, value in sorted(self.env.items())]
        return " ".join([*assignments, shlex.join(self.argv)])


@dataclass(frozen=True)
class QueueSpec:
    """A queue declared in `infra/queues.toml`."""

    name: str
    description: str = ""
    tags: tuple[str, ...] = ()


def parse_gpus(gpus: str) -> list[str]:
    """Split a `--gpus` value ("0", "0,1", "0-3") into GPU indices; raises UsageError."""
    text = gpus.strip()
    if not text:
        raise UsageError("--gpus is empty", hint="pass GPU indices such as --gpus 0 or --gpus 0,1")
    indices: list[int] = []
    for part in text.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        if dash:
            if not (low.isdigit() and high.isdigit()) or int(low) > int(high):
                raise UsageError(
                    f"--gpus {gpus!r}: {part!r} is not a GPU range",
                    hint="write a range as LOW-HIGH, for example --gpus 0-3",
                )
            indices.extend(range(int(low), int(high) + 1))
        elif part.isdigit():
            indices.append(int(part))
        else:
            raise UsageError(
                f"--gpus {gpus!r}: {part!r} is not a GPU index",
                hint="use the indices `nvidia-smi -L` prints, for example --gpus 0,1",
            )
    duplicates = sorted({i for i in indices if indices.count(i) > 1})
    if duplicates:
        raise UsageError(
            f"--gpus {gpus!r} names GPU {duplicates[0]} more than once",
            hint="list each GPU once",
        )
    return [str(i) for i in indices]


def _check_queues(queues: Sequence[str]) -> list[str]:
    if isinstance(queues, str):  # a bare string would silently become one queue per letter
        queues = [queues]
    if not queues:
        raise UsageError(
            "no queue given", hint="pass at least one --queue, for example --queue gpu"
        )
    seen: list[str] = []
    for queue in queues:
        check_queue_name(queue)
        if queue in seen:
            raise UsageError(f"queue {queue!r} is given twice", hint="list each queue once")
        seen.append(queue)
    return seen


def build_agent_commands(
    queues: Sequence[str],
    gpus: str | None = None,
    per_gpu: bool = False,
    image: str | None = None,
    cpu_only: bool = False,
    foreground: bool = True,
    *,
    services_mode: bool = False,
    create_queue: bool = False,
    standalone: bool = False,
    config_file: str | None = None,
    agent: Sequence[str] = DEFAULT_AGENT,
    skip_env_install: bool = True,
) -> list[AgentCommand]:
    """Build the `clearml-agent daemon` command lines for `ak-remote agent up`.

    One command per GPU when `per_gpu` (each with `--gpus N`), else one command for all of
    `gpus`. With `image` the agent runs each task in that Docker image (`--docker IMAGE`);
    without it tasks run on the agent's own Python, told to install nothing.
    Queue order is priority order. `foreground=False` adds `--detached`.

    Raises UsageError for an empty or invalid queue list, a bad `--gpus` value, `per_gpu`
    without GPUs, GPUs together with `cpu_only`, services mode without an image, or an
    empty image name.
    """
    queue_names = _check_queues(queues)
    if cpu_only and gpus is not None:
        raise UsageError(
            "--cpu-only and --gpus contradict each other", hint="drop one of the two flags"
        )
    if per_gpu and gpus is None:
        raise UsageError(
            "--per-gpu needs --gpus",
            hint="name the GPUs to split, for example --gpus 0,1 --per-gpu",
        )
    gpu_list = parse_gpus(gpus) if gpus is not None else None
    if image is not None and (not image.strip() or any(c.isspace() for c in image)):
        raise UsageError(
            f"invalid image name {image!r}", hint="pass one image reference, such as repo/name:tag"
        )
    if services_mode and image is None:
        raise UsageError(
            "services mode runs each task in its own container and needs --image",
            hint="pass --image, for example the CPU worker image",
        )
    if not agent:
        raise UsageError("no agent executable given", hint="leave `agent` at its default")

    def one(gpu_value: str | None) -> AgentCommand:
        argv = [*agent]
        if config_file is not None:
            argv += ["--config-file", config_file]
        argv += ["daemon", "--queue", *queue_names]
        if gpu_value is not None:
            argv += ["--gpus", gpu_value]
        if cpu_only:
            argv.append("--cpu-only")
        if services_mode:
            argv.append("--services-mode")
        if create_queue:
            argv.append("--create-queue")
        if standalone:
            argv.append("--standalone-mode")
        argv.append("--foreground" if foreground else "--detached")
        if image is not None:
            # Last, because `--docker` takes any number of values (image, then docker args).
            argv += ["--docker", image]
        env: dict[str, str] = {}
        if image is None and skip_env_install:
            # In Docker mode the worker image sets this itself; here the host Python is used.
            env[SKIP_ENV_INSTALL] = "1"
        return AgentCommand(argv=argv, env=env, gpus=gpu_value)

    if gpu_list is None:
        return [one(None)]
    if per_gpu:
        return [one(index) for index in gpu_list]
    return [one(",".join(gpu_list))]


def start_agents(
    commands: Sequence[AgentCommand],
    *,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    base_env: Mapping[str, str] | None = None,
) -> list[subprocess.Popen[bytes]]:
    """Start one process per command (never through a shell); returns them running.

    Each runs in a session of its own, so `stop_agents` can end it with whatever it started
    (a task's processes), and gets SIGTERM from the kernel if this process dies, SIGKILL
    included. If one fails to start, the ones already started are stopped. Raises UsageError
    when the agent executable is missing or cannot be run.
    """
    from ak_remote.process import die_with_parent

    started: list[subprocess.Popen[bytes]] = []
    environment = dict(os.environ if base_env is None else base_env)
    for command in commands:
        try:
            process = subprocess.Popen(
                command.argv,
                env={**environment, **command.env},
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                shell=False,
                start_new_session=True,
                preexec_fn=die_with_parent(os.getpid(), signal.SIGTERM),
            )
        except OSError as exc:
            stop_agents(started, grace=10.0)
            raise UsageError(
                f"cannot start {command.argv[0]!r}: {exc.strerror or exc}",
                hint="install the agent with `pip install 'ak-remote[agent]'` on this host",
            ) from exc
        started.append(process)
    return started


def stop_agents(processes: Sequence[subprocess.Popen[bytes]], grace: float = 30.0) -> None:
    """Stop agents started by `start_agents`, and everything they started.

    SIGTERM: clearml-agent 3.0.3 then aborts its running task (marked stopped), ends the task's
    process and unregisters, in well under a second. (SIGINT only aborts the task: the daemon
    goes on polling.) SIGKILL after `grace` seconds: an agent whose server is gone retries its
    unregister request forever.
    """
    from ak_remote.process import stop_groups

    stop_groups(processes, ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)))


class _StopRequested(BaseException):
    """SIGTERM or SIGHUP reached `agent up` while it waited for its agents."""


def supervise_agents(
    processes: Sequence[subprocess.Popen[bytes]], grace: float = 30.0
) -> tuple[list[int], int | None]:
    """Wait for the agents to end; returns their exit codes and the signal that stopped us.

    Ctrl-C, SIGTERM or SIGHUP to this process stops every agent and what it started
    (`stop_agents`) before returning; a second signal meanwhile is ignored, so it cannot cut
    the stop short and leave daemons behind. Agents that end on their own have their process
    groups emptied too.
    """
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        raise _StopRequested

    stops = (signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.getsignal(signum) for signum in (*stops, signal.SIGINT)}
    try:
        for signum in stops:
            signal.signal(signum, on_signal)
        try:
            for process in processes:
                process.wait()
        except KeyboardInterrupt:
            received.append(signal.SIGINT)
        except _StopRequested:
            pass
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        stop_agents(processes, grace)
        return [process.wait() for process in processes], (received[0] if received else None)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _queue_from_table(table: Any, where: str) -> QueueSpec:
    if not isinstance(table, dict):
        raise UsageError(f"{where}: each [[queue]] must be a table")
    unknown = sorted(set(table) - _QUEUE_KEYS)
    if unknown:
        raise UsageError(
            f"{where}: unknown key {unknown[0]!r}",
            hint=f"allowed keys: {', '.join(sorted(_QUEUE_KEYS))}",
        )
    name = table.get("name")
    if not isinstance(name, str) or not is_queue_name(name):
        raise UsageError(
            f"{where}: invalid or missing queue name {name!r}", hint=f"use {QUEUE_NAME_RULE}"
        )
    description = table.get("description", "")
    if not isinstance(description, str):
        raise UsageError(f"{where}: description of {name!r} must be a string")
    tags = table.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise UsageError(f"{where}: tags of {name!r} must be a list of non-empty strings")
    # Descriptions wrap over lines in the file; the server shows one line.
    return QueueSpec(name=name, description=" ".join(description.split()), tags=tuple(tags))


def load_queue_file(path: str | os.PathLike[str]) -> list[QueueSpec]:
    """Read the declared queues (`[[queue]]` tables in TOML), in file order.

    Raises UsageError when the file is missing, is not valid TOML, declares no queue, has an
    unknown key, a bad name or type, or the same queue twice.
    """
    file = Path(path)
    if tomllib is None:  # pragma: no cover - Python 3.10 without tomli
        raise UsageError(
            "reading the queue file needs Python 3.11+ or the tomli package",
            hint="pip install tomli",
        )
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UsageError(
            f"queue file {str(file)!r} not found", hint="pass the path of infra/queues.toml"
        ) from exc
    except OSError as exc:
        raise UsageError(f"cannot read queue file {str(file)!r}: {exc.strerror}") from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{file}: not valid TOML: {exc}") from exc
    unknown = sorted(set(document) - {"queue"})
    if unknown:
        raise UsageError(
            f"{file}: unknown top-level key {unknown[0]!r}", hint="declare queues as [[queue]]"
        )
    tables = document.get("queue", [])
    if not isinstance(tables, list) or not tables:
        raise UsageError(f"{file}: no queue declared", hint="add at least one [[queue]] table")
    specs = [_queue_from_table(t, f"{file}, queue {i + 1}") for i, t in enumerate(tables)]
    names = [spec.name for spec in specs]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(f"{file}: queue {name!r} is declared twice")
    return specs
