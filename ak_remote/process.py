"""Child processes tied to the CLI: stopping the CLI stops them, and they die with it.

`ak-remote run` starts the training process and `ak-remote tensorboard` starts TensorBoard.
Either used to outlive a SIGTERM to the CLI. Here SIGTERM and SIGHUP are passed on to the child
and waited for, and on Linux the kernel sends the child SIGTERM when the CLI dies in any way,
SIGKILL included (PR_SET_PDEATHSIG, set in the child between fork and exec).
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


def run_tied(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    stdout: IO[Any] | None = None,
    reraise_interrupt: bool = True,
) -> tuple[int, int | None]:
    """Run `argv` to its end; returns (its exit status, the stop signal this CLI got or None).

    A negative status is the signal that killed the child. After Ctrl-C the child is waited for,
    then KeyboardInterrupt is raised again unless `reraise_interrupt` is False (the child then
    reports the interruption itself, through its exit status).
    """
    child = subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        stdout=stdout,
        preexec_fn=die_with_parent(os.getpid()),
    )
    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {
        signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        while True:
            try:
                return child.wait(), (received[0] if received else None)
            except KeyboardInterrupt:
                # A Ctrl-C in the terminal reached the child too: a second SIGINT would cut its
                # cleanup short. Only a child that did not get it (kill -INT to this process
                # alone) is passed one, after a grace period.
                try:
                    code = child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    forward(signal.SIGINT, None)
                    code = child.wait()
                if reraise_interrupt:
                    raise
                return code, None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if child.poll() is None:
            child.kill()
            child.wait()
