"""The CLI's import cost: a fresh interpreter running a command never loads TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("tensorflow", "keras", "autokeras", "keras_tuner")


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["run", "--help"],
        ["launch", "--help"],
        ["jobs", "image-classifier"],
        ["run", "image-classifier", "--set", "epochs=zero"],
    ],
)
def test_launcher_never_imports_tensorflow(argv: list[str]) -> None:
    """The CLI process itself must stay light: training happens in a child process."""
    code = (
        "import sys\n"
        "from ak_remote.cli import cli\n"
        "try:\n"
        f"    cli.main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(loaded))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert "HEAVY=\n" in proc.stdout or proc.stdout.rstrip().endswith("HEAVY="), proc.stdout
    assert "Traceback" not in proc.stderr
