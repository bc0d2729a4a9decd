"""The job console: library chatter goes to the run's log file unless AK_REMOTE_VERBOSE is set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ak_remote.catalog import PROJECT_ROOT

SCRIPT = """
import logging, sys, warnings
from pathlib import Path
from ak_remote.runtime import console
console.quiet_libraries()
warnings.warn("a library warning")
logging.getLogger("tensorflow").warning("retracing, said the library")
logging.getLogger("tensorflow").error("a real library error")
console.say("progress line")
console.log_to(Path(sys.argv[1]))
logging.getLogger("tensorflow").warning("after the folder is known")
"""


def _run(tmp_path: Path, verbose: bool) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AK_REMOTE_VERBOSE", "TF_CPP_MIN_LOG_LEVEL")
    }
    if verbose:
        env["AK_REMOTE_VERBOSE"] = "1"
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        check=True,
        timeout=120,
    )


@pytest.mark.slow
def test_quiet_by_default(tmp_path: Path) -> None:
    proc = _run(tmp_path, verbose=False)
    assert "[ak-remote] progress line" in proc.stderr
    assert "a real library error" in proc.stderr  # errors still reach the terminal
    for chatter in ("a library warning", "retracing", "after the folder", "oneDNN"):
        assert chatter not in proc.stderr
    log = (tmp_path / "logs" / "libraries.log").read_text()
    for kept in ("a library warning", "retracing", "after the folder is known", "oneDNN"):
        assert kept in log  # written before and after the folder was known


@pytest.mark.slow
def test_verbose_shows_everything_and_writes_no_log(tmp_path: Path) -> None:
    proc = _run(tmp_path, verbose=True)
    assert "a library warning" in proc.stderr
    assert "retracing, said the library" in proc.stderr
    assert not (tmp_path / "logs" / "libraries.log").exists()
