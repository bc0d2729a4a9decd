"""Claiming a run folder: never reuse one by accident, never share one between two processes.

A run folder that already holds a run is refused unless the run resumes it (`--resume`) or the
user asked to replace it (`--overwrite`): a finished run's model is never replaced silently.
`--overwrite` removes only what a run of ours writes, and a folder holding files but no run of
ours is refused whatever the flags: it is a user's folder, not a run to replace.
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
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ak_remote.contract import SUMMARY_FILE
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
# Everything else a run of ours writes at the top of its folder (the job, a parallel search's
# controller, trials and final fit). `--overwrite` removes these and nothing else.
_RUN_FILES = frozenset(
    {
        SUMMARY_FILE,
        "data_split.json",
        "confusion_matrix.json",
        "git.diff",
        "search_state.zip",
        "search_controller.zip",
    }
)
_RUN_FOLDERS = frozenset(
    {
        "autokeras",
        "checkpoints",
        "logs",
        "models",
        "models.tmp",
        "models.unverified",
        "models.old",
        "tensorboard",
        "trials",
    }
)
# A parallel search's final fit (`final`, `final-retry1`) and atomic writes cut short by a kill.
_RUN_PATTERN = re.compile(
    r"^(final(-retry[0-9]+)?"
    r"|\.(summary\.json|data_split\.json|search_controller\.zip|search_state\.zip\.[0-9]+)\.tmp)$"
)


def _ours(name: str) -> bool:
    """Whether a run of ak-remote's writes an entry of this name at the top of its folder."""
    return name in _RUN_FILES or name in _RUN_FOLDERS or bool(_RUN_PATTERN.match(name))


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass(frozen=True)
class FolderContents:
    """What a would-be run folder holds: a run's entries, ak-remote's setup files, the rest."""

    run: list[str]  # entries a run of ours wrote
    foreign: list[str]  # entries no run of ours writes (a user's files)
    is_run: bool  # it holds a run (summary.json) or a run claimed it (the lock file)

    @classmethod
    def of(cls, folder: Path) -> FolderContents:
        try:
            names = [child.name for child in folder.iterdir()]
        except FileNotFoundError:
            names = []
        run = [n for n in names if _ours(n)]
        foreign = [n for n in names if not _ours(n) and n not in _BEFORE_THE_RUN]
        return cls(run, foreign, SUMMARY_FILE in names or LOCK_FILE in names)


def check_run_dir(folder: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a folder that is not ours to write into (UsageError).

    A folder holding files but no run of ours is refused whatever the flags: `--overwrite`
    replaces a run, never a user's files. A folder holding a run is refused unless the run
    resumes it or the user asked to replace it.
    """
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} exists and is not a folder", "pass another --run-dir")
    if not folder.is_dir():
        return
    contents = FolderContents.of(folder)
    if not contents.is_run and contents.foreign:
        raise UsageError(
            f"the folder {folder} is not an ak-remote run folder: it holds "
            f"{_listing(contents.foreign + contents.run)}",
            "pass a --run-dir that is new or empty; nothing in that folder was touched",
        )
    if resume or overwrite or not (contents.run or contents.foreign):
        return
    if contents.run:
        raise UsageError(
            f"the run folder {folder} already holds a run",
            f"resume it (ak-remote run JOB --resume {folder}), replace it (--overwrite), "
            "or pass a new --run-dir",
        )
    raise UsageError(
        f"the folder {folder} holds files that are not an ak-remote run's: "
        f"{_listing(contents.foreign)}",
        "pass a --run-dir that is new or empty; nothing in that folder was touched",
    )


@dataclass
class RunDirLock:
    """An exclusive claim on a run folder, released by `release` or when the process ends."""

    folder: Path
    handle: IO[str]
    kept: tuple[str, ...] = ()  # a user's entries that `--overwrite` left in place

    def kept_note(self) -> str | None:
        """What `--overwrite` left in the folder, in words (None when it left nothing)."""
        if not self.kept:
            return None
        one = len(self.kept) == 1
        return (
            f"kept {len(self.kept)} {'entry that is' if one else 'entries that are'} not "
            f"ak-remote's: {_listing(list(self.kept))}"
        )

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
        kept: list[str] = []
        if overwrite:
            # Only what a run of ours wrote: a user's own files in the folder stay.
            for child in folder.iterdir():
                if not _ours(child.name):
                    if child.name not in _BEFORE_THE_RUN:
                        kept.append(child.name)
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
    return RunDirLock(folder, handle, tuple(sorted(kept)))


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
