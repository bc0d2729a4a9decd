"""Claiming a run folder: never reuse one by accident, never share one between two processes.

A run folder that already holds anything is refused unless the run resumes it (`--resume`) or
the user asked to replace it (`--overwrite`): a finished run's model is never replaced silently.
The claim is an exclusive `fcntl.flock` on `<run>/.ak-remote.lock`, held for the life of the
process: the kernel releases it when the process ends however it ends (even SIGKILL), so a stale
lock never blocks a resume. The file names its holder (pid, host, start time), which is what a
second process is told when it is refused.

Pure Python (no TensorFlow): the launcher checks a folder with `check_run_dir` before it starts a
job, and the job claims it with `claim` before it writes anything into it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ak_remote.errors import UsageError

LOCK_FILE = ".ak-remote.lock"
# Space set aside when the folder is claimed, given back to write the last summary.json when
# the disk fills up, so a full disk still ends with a truthful "failed" summary.
RESERVE_FILE = ".ak-remote.reserve"
RESERVE_BYTES = 64 * 1024


def _holder_text(path: Path) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(holder["started"])))
        return f"pid {holder['pid']} on {holder['host']}, started {started}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


# What ak-remote itself puts in a folder before the job starts there (the lock and reserve, and
# a parallel search's spec and log for each part it starts): not a run yet.
_BEFORE_THE_RUN = frozenset({LOCK_FILE, RESERVE_FILE, "search_spec.json", "job.log"})


def _occupied(folder: Path) -> bool:
    """Whether the folder holds anything a run wrote (ak-remote's own setup files do not count)."""
    try:
        return any(child.name not in _BEFORE_THE_RUN for child in folder.iterdir())
    except FileNotFoundError:
        return False


def check_run_dir(folder: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an existing, non-empty run folder unless resuming or overwriting (UsageError)."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} exists and is not a folder", "pass another --run-dir")
    if resume or overwrite or not folder.is_dir() or not _occupied(folder):
        return
    raise UsageError(
        f"the run folder {folder} already holds a run",
        f"resume it (ak-remote run JOB --resume {folder}), replace it (--overwrite), "
        "or pass a new --run-dir",
    )


@dataclass
class RunDirLock:
    """An exclusive claim on a run folder, released by `release` or when the process ends."""

    folder: Path
    handle: IO[str]

    def free_reserve(self) -> bool:
        """Give back the space set aside at the claim; False when there was none."""
        try:
            (self.folder / RESERVE_FILE).unlink()
        except FileNotFoundError:
            return False
        return True

    def release(self) -> None:
        import fcntl

        try:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
        finally:
            self.handle.close()


def claim(folder: Path, resume: bool = False, overwrite: bool = False) -> RunDirLock:
    """Create (if needed) and lock the run folder; with `overwrite`, empty it first.

    Raises UsageError when the folder holds a run (and neither flag is given), another process
    holds it (naming that process), or it cannot be written (read-only, no space).
    """
    import fcntl

    check_run_dir(folder, resume, overwrite)
    path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+", encoding="utf-8")
    except OSError as exc:
        raise unwritable(folder, exc) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UsageError(
            f"the run folder {folder} is in use by {_holder_text(path)}",
            "wait for that run to end or stop it; two runs in one folder would mix their files",
        ) from None
    holder: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
    holder["started"] = time.time()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder) + "\n")
        handle.flush()
        if overwrite:
            for child in folder.iterdir():
                if child.name in _BEFORE_THE_RUN:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        reserve = folder / RESERVE_FILE
        if not reserve.exists():
            with reserve.open("wb") as blob:
                blob.write(b"\0" * RESERVE_BYTES)
    except OSError as exc:
        handle.close()
        (folder / RESERVE_FILE).unlink(missing_ok=True)
        raise unwritable(folder, exc) from None
    return RunDirLock(folder, handle)


def unwritable(folder: Path, exc: OSError) -> UsageError:
    """The one-line error for a run folder that cannot be written."""
    if exc.errno == errno.ENOSPC:
        return UsageError(
            f"no space left on the device of the run folder {folder}",
            "free some space, or pass a --run-dir on another disk",
        )
    reason = exc.strerror or type(exc).__name__
    return UsageError(
        f"cannot write to the run folder {folder}: {reason}",
        "pass a --run-dir you can write to",
    )
