"""`ak-remote tensorboard`: fetch runs' TensorBoard logs and serve them (no TensorBoard.dev)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
from pathlib import Path

import click

from ak_remote import ui
from ak_remote.commands.common import App, pass_app
from ak_remote.errors import StoppedError, UsageError


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ak-remote" / "tensorboard"


@click.command()
@click.argument("ids", nargs=-1, required=True, metavar="IDS...")
@click.option("--port", type=click.IntRange(1, 65535), default=6006, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--logdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to unpack the logs [default: ~/.cache/ak-remote/tensorboard].",
)
@click.option("--print-command", is_flag=True, help="Print the tensorboard command; do not run it.")
@pass_app
def tensorboard(
    app: App, ids: tuple[str, ...], port: int, host: str, logdir: Path | None, print_command: bool
) -> None:
    """Download the runs' TensorBoard logs and start TensorBoard over them, one run per name."""
    from ak_remote.launcher.pull import fetch_tensorboard_logs
    from ak_remote.search.read import trials_of_searches

    root = (logdir or _cache_root()).resolve()
    client = app.client()
    # A search id means its finished trials: one log dir, HParams across them.
    ids = trials_of_searches(client, ids)
    dirs = fetch_tensorboard_logs(client, list(ids), root, progress=ui.info)
    spec = ",".join(f"{label}:{path}" for label, path in dirs.items())
    binary = shutil.which("tensorboard")
    argv = ([binary] if binary else [sys.executable, "-m", "tensorboard.main"]) + [
        "--logdir_spec",
        spec,
        "--port",
        str(port),
        "--host",
        host,
    ]
    if print_command:
        ui.data(shlex.join(argv))
        return
    if binary is None:
        try:
            import tensorboard as _tb  # noqa: F401
        except ImportError:
            raise UsageError(
                "TensorBoard is not installed here",
                "pip install tensorboard, or rerun with --print-command",
            ) from None
    ui.info(f"TensorBoard on http://{host}:{port} (Ctrl-C stops it)")
    from ak_remote.process import run_tied

    # A list, never a shell: run names come from the server. Tied: stopping us stops it.
    tied = run_tied(argv, say=ui.info)
    if tied.stopped_by is not None:
        raise StoppedError(
            f"stopped by {signal.Signals(tied.stopped_by).name}; TensorBoard stopped too"
        )
    if tied.interrupted:
        raise KeyboardInterrupt  # TensorBoard stopped with it: exit 130
