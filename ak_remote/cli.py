"""The `ak-remote` command line: a thin, lazily loaded layer over the library modules.

Each command lives in `ak_remote.commands.<module>` and is imported only when it runs (or when
its own --help is asked for), so `ak-remote --help` never pays for ClearML, let alone TensorFlow.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

import click

from ak_remote import __version__
from ak_remote.errors import AkRemoteError, ExitCode

# name -> (module under ak_remote.commands, attribute, one-line help shown by `ak-remote --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": (
        "run",
        "run",
        "Run a job on this machine (offline ClearML session without a server).",
    ),
    "jobs": ("jobs", "jobs", "List the jobs and their parameters."),
    "import-offline": (
        "offline",
        "import_offline",
        "Upload an offline session to the ClearML server.",
    ),
    "templates": (
        "templates",
        "templates",
        "Create, update and list the template tasks agents clone.",
    ),
    "launch": ("launch", "launch", "Clone a template with overrides and enqueue it (or a sweep)."),
    "status": ("runs", "status", "Show the status and latest metrics of runs."),
    "logs": ("runs", "logs", "Print (or follow) a run's console log."),
    "abort": ("runs", "abort", "Stop queued or running runs."),
    "compare": ("compare", "compare", "Compare runs: differing parameters and final metrics."),
    "pull": ("pull", "pull", "Download a run's exported model, verify and reload it."),
    "predict": ("predict", "predict", "Predict with a run's serving model (CSV, texts, images)."),
    "reproduce": ("reproduce", "reproduce", "Run a finished run again with everything pinned."),
    "resume": ("resume", "resume", "Continue a stopped or failed run's search where it left off."),
    "tensorboard": ("tensorboard", "tensorboard", "Fetch runs' TensorBoard logs and serve them."),
    "queues": ("fleet", "queues", "List queues, or create the ones a queue file declares."),
    "agent": ("fleet", "agent", "Start clearml-agent daemons serving queues on this host."),
    "agents": ("fleet", "agents", "List registered workers, their queues and current runs."),
    "doctor": ("fleet", "doctor", "Check credentials, server, queues, workers and image."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use, and whose errors map to exit codes."""

    def main(  # type: ignore[override]
        self, args: Any = None, prog_name: str | None = None, **extra: Any
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in argv
        extra.pop("standalone_mode", None)
        try:
            result = super().main(argv, prog_name or "ak-remote", standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(ExitCode.USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
        except (click.exceptions.Abort, KeyboardInterrupt):
            click.echo("Interrupted.", err=True)
            sys.exit(ExitCode.INTERRUPTED)
        except AkRemoteError as exc:
            if debug:
                traceback.print_exc()
            if not exc.reported:
                from ak_remote.datasets.secrets import (
                    mask_credentials,  # a last guard for any message
                )

                click.echo(f"Error: {mask_credentials(str(exc))}", err=True)
            sys.exit(exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - a bug: say so plainly, with the traceback behind --debug
            if debug:
                traceback.print_exc()
            click.echo(
                f"Internal error: {type(exc).__name__}: {exc} "
                "(this is a bug: rerun with --debug and report it)",
                err=True,
            )
            sys.exit(ExitCode.INTERNAL)
        sys.exit(result if isinstance(result, int) else ExitCode.OK)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attribute, _ = COMMANDS[cmd_name]
        module = importlib.import_module(f"ak_remote.commands.{module_name}")
        command = getattr(module, attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the registry, so the top-level --help imports no command module.
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_text) for name, (_, _, help_text) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ak-remote")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors (the jobs' own included).")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Run AutoKeras architecture searches on ClearML GPU agents, tracked and reproducible.

    \b
    Start here:
      ak-remote run structured-classifier --set max_trials=2   # on this machine
      ak-remote templates sync && ak-remote launch image-classifier -q gpu
    Exit codes: 0 ok, 1 internal error, 2 usage, 3 data, 4 server, 5 run failed, 6 timeout,
    130 Ctrl-C, 143 stopped (SIGTERM).
    """
    from ak_remote.commands.common import App

    if debug:  # the jobs this invocation starts print their tracebacks too (runtime/run.py)
        os.environ["AK_REMOTE_DEBUG"] = "1"
    if not isinstance(ctx.obj, App):
        ctx.obj = App()


def main() -> None:
    """Console-script entry point."""
    cli.main()
