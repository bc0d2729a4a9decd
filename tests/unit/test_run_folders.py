"""A stop signal a finalizer swallowed still stops the job (in this process: the job's signal
handling, with the signals raised here). Run folders with real processes:
tests/integration/test_run_folders.py and tests/system/test_run_folders.py.
"""

from __future__ import annotations

import signal

import pytest

from ak_remote.runtime import signals


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    ("signum", "expected"),
    [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, signals.Stopped)],
)
def test_a_stop_signal_dropped_in_a_finalizer_still_stops_the_job(
    signum: int, expected: type[BaseException]
) -> None:
    """A handler's exception raised inside `__del__` is dropped by Python (seen with Ctrl-C
    during TensorFlow's import): the job raises it again at its next safe point."""

    class Finalized:
        def __del__(self) -> None:
            signal.raise_signal(signum)

    # As in a terminal's foreground job: a session started in the background inherits SIGINT
    # ignored, and the job leaves an ignored SIGINT alone (signals.install).
    sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous = signals.install()
    try:
        Finalized()  # collected at once; the handler's exception is printed and dropped
        with pytest.raises(expected):
            signals.raise_if_stopped()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        signal.signal(signal.SIGINT, sigint)
