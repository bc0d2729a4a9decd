"""The AutoKeras job runtime: what `jobs/<job>.py` runs, locally or under a ClearML agent.

Importing this package is cheap (no TensorFlow, AutoKeras or ClearML); `main` loads them when a
job actually runs.
"""

from __future__ import annotations


def main(job_name: str, argv: list[str] | None = None) -> int:
    """Run the job `job_name` with `argv` (default: sys.argv[1:]); returns the exit code."""
    from ak_remote.runtime.run import main as run_main

    return run_main(job_name, argv)


__all__ = ["main"]
