"""Child processes tied to the CLI: stopping the CLI stops them, and they die with it.

`ak-remote run` starts the training process and `ak-remote tensorboard` starts TensorBoard.
Either used to outlive a SIGTERM to the CLI. Here SIGTERM and SIGHUP are passed on to the child
and waited for, and on Linux the kernel sends the child SIGTERM when the CLI dies in any way,
SIGKILL included (PR_SET_PDEATHSIG, set in the child between fork and exec). Ctrl-C reaches the
CLI alone (the child has a process group of its own), which passes one SIGINT on and escalates
only after a grace (`run_tied`).
`ak-remote agent up` starts its daemons in their own sessions and stops each whole process group
(`stop_groups`), so what a daemon started does not outlive it either.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel send the child `signum` when `parent` dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    # Looked up here, in the parent: importing in the child of a threaded process can deadlock.
    try:
        prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_death_signal() -> None:  # runs in the child, before exec
        prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the death signal was set
            os.kill(os.getpid(), signum)

    return set_death_signal


def stop_groups(
    processes: Sequence[subprocess.Popen[Any]],
    steps: Sequence[tuple[int, float]] = ((signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)),
) -> None:
    """Stop processes each started in a session of its own, with everything in their groups.

    Each step signals the groups whose leader still runs and waits up to its seconds; last,
    SIGKILL to every group for anything a leader left behind.
    """
    for signum, wait in steps:
        alive = [process for process in processes if process.poll() is None]
        if not alive:
            break
        for process in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signum)
        deadline = time.monotonic() + wait
        for process in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.monotonic()))
    for process in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


# Ctrl-C: the child gets one SIGINT and this long to close (a job writes its summary, marks its
# task, zips its offline session), then SIGTERM and as long again, then SIGKILL. On a loaded
# machine a job's closing took well over 10 s. A second Ctrl-C skips the wait at hand.
INTERRUPT_GRACE_S = 60.0


@dataclass(frozen=True)
class Tied:
    """How a tied child ended."""

    code: int  # its exit status; negative: the signal that killed it
    stopped_by: int | None  # SIGTERM or SIGHUP this CLI got (and passed on), or None
    interrupted: bool = False  # Ctrl-C reached this CLI (the child got one SIGINT)
    escalated: str | None = None  # the last signal sent after that SIGINT (SIGTERM, SIGKILL)
    waited: float = 0.0  # seconds from Ctrl-C to that signal


def run_tied(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    stdout: IO[Any] | None = None,
    say: Callable[[str], None] | None = None,
    grace: float = INTERRUPT_GRACE_S,
) -> Tied:
    """Run `argv` to its end, tied to this process; returns how it ended.

    The child runs in a process group of its own, so a Ctrl-C in the terminal reaches this
    process only, which passes exactly one SIGINT on (never a second one mid-cleanup): the
    child is then given `grace` seconds to stop, SIGTERM and `grace` more, then SIGKILL; each
    escalation is told to `say`, and a further Ctrl-C skips the wait at hand.
    SIGTERM and SIGHUP are passed on as they come. The caller decides the exit code.
    """
    child = subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        stdout=stdout,
        process_group=0,
        preexec_fn=die_with_parent(os.getpid()),
    )
    tell = say or (lambda _text: None)
    received: list[int] = []
    interrupts: list[float] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    def interrupt(_signum: int, _frame: Any) -> None:
        interrupts.append(time.monotonic())
        if len(interrupts) == 1:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGINT)

    handlers: dict[int, Any] = {signal.SIGTERM: forward, signal.SIGHUP: forward}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        handlers[signal.SIGINT] = interrupt  # ignored (a background job): left ignored
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    escalated: str | None = None
    waited = 0.0
    try:
        steps: list[tuple[int, float | None]] = [(signal.SIGTERM, grace), (signal.SIGKILL, None)]
        deadline: float | None = None
        hurried = 1
        while True:
            try:
                code = child.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if not interrupts:
                continue
            now = time.monotonic()
            if deadline is None:
                deadline = interrupts[0] + grace
            if now < deadline and len(interrupts) <= hurried:
                continue
            if not steps:
                continue
            signum, wait = steps.pop(0)
            escalated, waited = signal.Signals(signum).name, now - interrupts[0]
            if len(interrupts) > hurried:
                hurried = len(interrupts)
                tell(f"Ctrl-C again: sending the job {escalated}")
            else:
                tell(f"the job has not stopped {waited:.0f} s after Ctrl-C: sending it {escalated}")
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)
            deadline = now + wait if wait is not None else float("inf")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if child.poll() is None:
            child.kill()
            child.wait()
    return Tied(code, received[0] if received else None, bool(interrupts), escalated, waited)
