"""A real Ctrl-C (SIGINT) to a real `ak-remote launch` process mid-sweep leaves nothing on the
emulator.
"""

from __future__ import annotations

import subprocess
import sys

from tests.emulator.server import Emulator
from tests.helpers import JOB, launched, queue_entries
from tests.processes import as_foreground_job


def test_a_real_ctrl_c_mid_sweep_leaves_nothing(gpu_server: Emulator) -> None:
    """SIGINT to a real `ak-remote launch` process while it is cloning a 300-run sweep."""
    import os
    import signal

    seeds = ",".join(str(i) for i in range(1, 301))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ak_remote", "launch", JOB, "-q", "gpu", "--sweep", f"seed={seeds}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **gpu_server.env()},
        preexec_fn=as_foreground_job,  # the test sends it Ctrl-C
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("created 20/"):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Interrupted." in err
    assert out == ""
    assert launched(gpu_server) == []
    assert queue_entries(gpu_server) == []
    assert gpu_server.count("tasks.enqueue_many") == 0
