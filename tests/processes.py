"""Which processes this test session started, and which of them are still running.

Every process a test starts inherits two variables (set in tests/conftest.py): the session's
tag and the id of the test that was running. At the end of the session the conftest guard reads
them back from /proc/PID/environ, so a clearml-agent left behind is found, named with the test
that started it, and killed, whoever else runs agents on this machine.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

# Not AK_REMOTE_/CLEARML_: tests/conftest.py strips those from every test's environment.
SESSION_VAR = "AKR_TEST_SESSION"
TEST_VAR = "AKR_TEST_NODE"


def as_foreground_job() -> None:
    """`preexec_fn`: the child gets Ctrl-C's default effect, as a terminal's foreground job has
    (a test suite started in the background inherits SIGINT ignored, and so would the child)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def as_terminal_job() -> None:
    """`preexec_fn`: a foreground job in a process group of its own, as a shell starts one."""
    os.setsid()
    as_foreground_job()


def new_session_tag() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def tag_env() -> dict[str, str]:
    """The tag variables as they are now, for a child started with an environment of its own."""
    return {name: os.environ[name] for name in (SESSION_VAR, TEST_VAR) if name in os.environ}


@dataclass(frozen=True)
class Tagged:
    pid: int
    command: str
    test: str

    @property
    def is_agent(self) -> bool:
        return "clearml-agent" in self.command or "clearml_agent" in self.command


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def tagged_processes(session: str) -> list[Tagged]:
    """Running processes (not zombies) carrying `session`'s tag, this process excepted."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            environ = _environ(pid)
            if environ.get(SESSION_VAR) != session:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):  # gone meanwhile, or not ours to read
            continue
        command = " ".join(a.decode(errors="replace") for a in argv if a)
        found.append(Tagged(pid, command, environ.get(TEST_VAR, "?")))
    return found


def leftover_agents(session: str, settle: float = 10.0) -> list[Tagged]:
    """clearml-agent processes of `session` still running after up to `settle` seconds."""
    deadline = time.monotonic() + settle
    while True:
        agents = [p for p in tagged_processes(session) if p.is_agent]
        if not agents or time.monotonic() > deadline:
            return agents
        time.sleep(0.5)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (a daemon's task and what the task started)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            pending += children
    return found


def kill(processes: list[Tagged]) -> list[int]:
    """SIGKILL each process and everything below it (by pid: a test's agent may share the
    test's own process group). Returns the pids of the descendants also killed."""
    below = [pid for process in processes for pid in descendants(process.pid)]
    for pid in [p.pid for p in processes] + below:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
    return below
