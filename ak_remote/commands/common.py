"""What every command shares: the per-invocation context, shared options, following runs.

The context (`App`) is created once by the `ak-remote` group and holds ak-remote's configuration
and the one ClearML client of the invocation, both made on first use from the environment (tests
point both at an emulator through an isolated HOME and CLEARML_* variables).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ak_remote import ui
from ak_remote.errors import RunFailedError

if TYPE_CHECKING:
    from ak_remote.clearml_api import Client
    from ak_remote.config import Config

F = TypeVar("F", bound=Callable[..., Any])


class App:
    """Per-invocation state: ak-remote's configuration and the one ClearML client."""

    def __init__(self) -> None:
        self._client: Client | None = None
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from ak_remote.config import load_config

            self._config = load_config()
        return self._config

    def client(self) -> Client:
        """The invocation's ClearML client (logs in once, on first use)."""
        if self._client is None:
            from ak_remote.clearml_api import client_from_config

            self._client = client_from_config(on_retry=ui.info)
        return self._client


pass_app = click.make_pass_decorator(App, ensure=True)


def json_option(help_text: str = "Print as JSON.") -> Callable[[F], F]:
    """The `--json` flag, the same on every command (stdout gets JSON only)."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def set_option(dest: str = "sets") -> Callable[[F], F]:
    """`--set KEY=VALUE`, repeatable: a job parameter (`run`, `launch`)."""
    return click.option(
        "--set",
        dest,
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a job parameter (repeatable). `ak-remote jobs JOB` lists them.",
    )


def dry_run_option(what: str = "what would be created") -> Callable[[F], F]:
    """`--dry-run`: check everything, show the plan, create nothing."""
    return click.option("--dry-run", is_flag=True, help=f"Show {what}; create nothing.")


def wait_option(help_text: str) -> Callable[[F], F]:
    """`--wait`: follow what was started until it ends (exit 5 when it did not complete)."""
    return click.option("--wait", is_flag=True, help=help_text)


def templates_project_option() -> Callable[[F], F]:
    """`--project` of the template commands."""
    return click.option(
        "--project", help="ClearML project of the templates [default: ak-remote/templates]."
    )


# What the server's status messages mean, in words (its own are internal shorthand).
_REASONS = {
    "forced stop (non-responsive)": "the server stopped it: no report from it for two hours",
    "stopped by user": "stopped by a user",
    "aborted": "aborted",
}


def _why(status: str, message: str) -> str:
    """A short reason after a run's final status, only for runs that did not complete."""
    from ak_remote.contract import BAD_STATUSES

    if status not in BAD_STATUSES:
        return ""
    text = " ".join(message.split())
    reason = _REASONS.get(text.lower())
    if reason is None:
        # "completed", "Stopped"...: a status word that says nothing the status does not
        reason = "" if not text or text.lower() in {status, "completed", "failed"} else text
    return f" ({reason[:160]})" if reason else ""


def follow_runs(
    client: Client, task_ids: list[str], interval: float, outage: float | None = None
) -> None:
    """Wait for the runs with a progress line per change, riding out a server outage of up to
    `outage` seconds (default: the `wait_outage` setting); RunFailedError if any did not
    complete, ServerUnavailable if the server stays down longer."""
    from ak_remote.config import load_config
    from ak_remote.contract import BAD_STATUSES
    from ak_remote.launcher.runs import Outage, RunStatus, wait

    def show(rows: list[RunStatus]) -> None:
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        ui.info("  " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))

    ui.info(f"Waiting for {len(task_ids)} run(s) (Ctrl-C stops waiting, not the runs)...")
    limit = load_config().wait_outage if outage is None else outage
    rows = wait(
        client,
        task_ids,
        interval=interval,
        on_change=show,
        outage=Outage(client, task_ids, limit, ui.info),
    )
    bad = [row for row in rows if row.status in BAD_STATUSES]
    for row in rows:
        ui.info(f"  {row.id} {row.status}{_why(row.status, row.message)}")
    if bad:
        raise RunFailedError(
            f"{len(bad)} of {len(rows)} runs did not complete: "
            + ", ".join(f"{row.id} ({row.status})" for row in bad),
            f"read the log: ak-remote logs {bad[0].id}",
        )
