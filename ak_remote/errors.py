"""Exception types and the exit codes they map to (one place, as the CLI's contract)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes of every `ak-remote` command."""

    OK = 0
    INTERNAL = 1  # a bug: please report it with the `--debug` traceback
    USAGE = 2  # bad flags, unknown job/parameter/queue, wrong type: nothing was created
    DATA = 3  # the data cannot be read or cannot train this job (empty, corrupt, one class)
    SERVER = 4  # the ClearML server is unreachable or refused a request
    RUN_FAILED = 5  # a run failed, was aborted, or its exported model failed verification
    TIMEOUT = 6  # gave up waiting (--timeout); the runs themselves go on
    INTERRUPTED = 130  # Ctrl-C
    STOPPED = 143  # stopped by SIGTERM (128 + 15): the run is marked failed and can be resumed


class AkRemoteError(Exception):
    """Base of every error that is the user's to fix; carries a hint saying what to do next."""

    exit_code: ExitCode = ExitCode.INTERNAL
    # True when the line was already printed (by the job process the CLI ran): print it once.
    reported: bool = False

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(AkRemoteError):
    """Bad input on the command line or in job parameters."""

    exit_code = ExitCode.USAGE


class DataError(AkRemoteError):
    """The dataset is missing, unreadable, empty or unusable for the job."""

    exit_code = ExitCode.DATA


class ServerError(AkRemoteError):
    """The ClearML server could not be reached or refused a request."""

    exit_code = ExitCode.SERVER


class InternalError(AkRemoteError):
    """A bug in ak-remote, reported with what it left behind (never as a server or user error)."""

    exit_code = ExitCode.INTERNAL


class WaitTimeout(AkRemoteError):
    """Waiting for runs took longer than asked; the runs are not touched."""

    exit_code = ExitCode.TIMEOUT


class RunFailedError(AkRemoteError):
    """A run ended badly: failed, aborted, or its export did not verify."""

    exit_code = ExitCode.RUN_FAILED


class Interrupted(AkRemoteError):
    """Ctrl-C stopped the command (and what it started)."""

    exit_code = ExitCode.INTERRUPTED


class StoppedError(AkRemoteError):
    """The command was stopped by a signal (SIGTERM, SIGHUP); what it started was stopped too."""

    exit_code = ExitCode.STOPPED
