"""Issue 13 item 9: what the CLI starts (TensorBoard here) never outlives it.

A real `tensorboard` process started through `ak_remote.process.run_tied` (what
`ak-remote tensorboard` and `ak-remote run` use), stopped with SIGTERM to its parent, and
orphaned by SIGKILL of its parent.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import alive, free_port, wait_for

PARENT = textwrap.dedent(
    """
    import sys
    from ak_remote.process import run_tied
    from ak_remote.errors import StoppedError
    tied = run_tied(
        [sys.executable, "-m", "tensorboard.main", "--logdir", sys.argv[1],
         "--port", sys.argv[2], "--host", "127.0.0.1"]
    )
    sys.exit(143 if tied.stopped_by else 0)
    """
)


def serving(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def child_of(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(text[0]) if text else None


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_tensorboard_stops_with_its_cli(tmp_path: Path, stop: signal.Signals) -> None:
    port = free_port()
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        board = int(wait_for(lambda: child_of(parent.pid), 60, "TensorBoard to start"))
        wait_for(lambda: serving(port), 120, "TensorBoard to listen")
        parent.send_signal(stop)
        code = parent.wait(timeout=60)
        assert code == (143 if stop == signal.SIGTERM else -signal.SIGKILL)
        wait_for(lambda: not alive(board), 30, "TensorBoard to stop")
        assert not serving(port)
    finally:
        if parent.poll() is None:
            parent.kill()
