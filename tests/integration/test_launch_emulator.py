"""`launch --dry-run` in a fresh interpreter against the emulator never loads TensorFlow."""

from __future__ import annotations

import subprocess
import sys

from tests.emulator.server import Emulator


def test_dry_run_never_imports_tensorflow(gpu_server: Emulator) -> None:
    code = (
        "import sys\n"
        "from ak_remote.cli import cli\n"
        "try:\n"
        "    cli.main(['launch', 'structured-classifier', '-q', 'gpu', '--dry-run'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'autokeras') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
