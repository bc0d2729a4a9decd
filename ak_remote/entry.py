"""The entry of a job process, what `jobs/<job>.py` runs (locally or under a ClearML agent).

One training (ak_remote.runtime), or a part of a parallel search (ak_remote.search.worker: the
controller, a trial, the final fit) when ak-remote's own hidden flag or the task's `Search/spec`
says so. Importing this module is cheap; `main` loads TensorFlow when a job actually runs.
"""

from __future__ import annotations


def main(job_name: str, argv: list[str] | None = None) -> int:
    """Run the job `job_name` with `argv` (default: sys.argv[1:]); returns the exit code."""
    from ak_remote.runtime.run import main as run_main
    from ak_remote.search.worker import SearchParts

    return run_main(job_name, argv, SearchParts())
