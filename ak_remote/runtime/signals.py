"""Stop signals in the job process: raised where they land, and remembered.

A signal handler runs between two bytecodes of whatever the main thread executes, finalizers
(`__del__`) included; an exception raised there is printed as "Exception ignored" and dropped,
and the run would go on as if Ctrl-C never happened (seen: a SIGINT landing in pyparsing's
`__del__` while TensorFlow imported). So each stop signal is also recorded, and `raise_if_stopped`
raises it again at the job's safe points: between phases and at every training batch.
"""

from __future__ import annotations

import signal
from typing import Any

_received: list[int] = []


class Stopped(BaseException):
    """A stop signal arrived (SIGTERM, SIGHUP, or the launching CLI died).

    A BaseException, like KeyboardInterrupt, so Keras Tuner's per-trial `except Exception` does
    not take it for a failed trial and carry on.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interruption(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Stopped(signum)


def on_signal(signum: int, _frame: Any) -> None:
    _received.append(signum)
    raise _interruption(signum)


def install() -> dict[int, Any]:
    """Handle SIGTERM, SIGHUP and SIGINT (unless SIGINT is ignored, as in a background job);
    returns the previous handlers."""
    _received.clear()
    signums = [signal.SIGTERM, signal.SIGHUP]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signums.append(signal.SIGINT)
    return {signum: signal.signal(signum, on_signal) for signum in signums}


def _remember(signum: int, _frame: Any) -> None:
    _received.append(signum)


def hold() -> None:
    """From now on a stop signal is remembered, never raised: the job is closing its run
    (summary, task, offline session), and a signal raised in the middle would leave that half
    written. Whoever must stop it sooner sends SIGKILL (the CLI does, after its grace)."""
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        if signal.getsignal(signum) is on_signal:
            signal.signal(signum, _remember)


def raise_if_stopped() -> None:
    """Raise the first stop signal received, if any (it may have been dropped where it landed)."""
    if _received:
        raise _interruption(_received[0])
