"""The job's console: the few lines that matter on the terminal, library chatter in a log file.

On the terminal: ak-remote's own progress lines (`say`), Keras' epoch lines and Keras Tuner's
trial tables. TensorFlow's, Keras' and ClearML's warnings (retracing, "Skipping variable loading
for optimizer", repository detection, GPU monitoring) go to `<run>/logs/libraries.log` instead,
or stay on the terminal with AK_REMOTE_VERBOSE=1 (`ak-remote run --verbose`). Errors of every
library still reach the terminal.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

VERBOSE_ENV = "AK_REMOTE_VERBOSE"
LOG_FILE = "logs/libraries.log"
# Loggers whose records are chatter unless verbose; ClearML's sets propagate=False and its own
# stream handlers, so it is re-pointed by name (TensorFlow's logs to the root when it has one).
_LIBRARY_LOGGERS = ("clearml", "py.warnings", "absl", "h5py")


def verbose() -> bool:
    """True when the user asked to see every library message."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def say(message: str) -> None:
    """One ak-remote progress line on stderr."""
    sys.stderr.write(f"[ak-remote] {message}\n")
    sys.stderr.flush()


def error(message: str) -> None:
    """One error line on stderr (printed once, by the runtime's main)."""
    sys.stderr.write(f"{message}\n")
    sys.stderr.flush()


class _FileLater(logging.Handler):
    """Keeps records in memory until the run folder is known, then appends them to its log file."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        self._pending: list[logging.LogRecord] = []
        self._file: logging.FileHandler | None = None

    def attach(self, path: Path) -> None:
        if self._file is not None:
            self._file.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = logging.FileHandler(path, encoding="utf-8")
        self._file.setFormatter(self.formatter)
        for record in self._pending:
            self._file.emit(record)
        self._pending.clear()

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is not None:
            self._file.emit(record)
        elif len(self._pending) < 10_000:  # bounded, in case the folder never comes
            self._pending.append(record)


_handler = _FileLater()
_errors = logging.StreamHandler(sys.stderr)
_errors.setLevel(logging.ERROR)


def quiet_libraries() -> None:
    """Route library logs and Python warnings to the log file. Call before TensorFlow loads."""
    if verbose():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # C++ INFO lines are never useful
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.captureWarnings(True)
    root = logging.getLogger()
    if _handler not in root.handlers:
        # A configured root keeps TensorFlow from adding its own stderr handler (tf_logging).
        root.addHandler(_handler)
        root.addHandler(_errors)
        root.setLevel(logging.INFO)
    from ak_remote.model.reload import import_tensorflow_quietly

    import_tensorflow_quietly()
    tidy()


def tidy() -> None:
    """Point the libraries' own loggers at the log file (again after a library set itself up)."""
    if verbose():
        return
    if "clearml" in sys.modules:
        # ClearML makes its console logger on first use (during Task.init, with the repository
        # and GPU warnings); make it now, so that it can be pointed at the file before then.
        from clearml.debugging.log import LoggerRoot

        LoggerRoot.get_base_logger()
    for name in _LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if handler not in (_handler, _errors):
                logger.removeHandler(handler)
        for handler in (_handler, _errors):
            if handler not in logger.handlers:
                logger.addHandler(handler)
        logger.propagate = False


def log_to(run_dir: Path) -> Path:
    """Start writing the routed messages to the run's log file; returns its path."""
    path = run_dir / LOG_FILE
    if not verbose():
        _handler.attach(path)
    return path
