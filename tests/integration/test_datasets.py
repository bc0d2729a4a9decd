"""Checking dataset references stays cheap: a fresh interpreter imports no numpy or TensorFlow."""

from __future__ import annotations

import subprocess
import sys

from ak_remote.catalog import PROJECT_ROOT

ROOT = PROJECT_ROOT


def test_imports_stay_cheap() -> None:
    """The launcher may import these before anything else: no numpy, TensorFlow or ClearML."""
    code = (
        "import sys, ak_remote.datasets.references, ak_remote.datasets.secrets, ak_remote.runtime; "
        "heavy = [m for m in ('numpy', 'tensorflow', 'keras', 'autokeras', 'clearml') "
        "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
