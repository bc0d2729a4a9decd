"""`ak-remote import-offline`: upload an offline run to the ClearML server."""

from __future__ import annotations

from pathlib import Path

import click

from ak_remote import ui
from ak_remote.commands.common import App, json_option, pass_app
from ak_remote.contract import FAILED, server_configured
from ak_remote.errors import UsageError


@click.command("import-offline")
@click.argument("session", type=click.Path(dir_okay=False, path_type=Path))
@json_option("Print the result as JSON.")
@pass_app
def import_offline(app: App, session: Path, as_json: bool) -> None:
    """Upload SESSION (an offline session zip from `ak-remote run`) to the ClearML server.

    The run's model, which offline mode cannot register, is registered on the way.
    """
    from ak_remote.launcher import offline

    if offline.close_session(session):  # its job was killed before it could zip it
        ui.info(
            f"the session was never closed (its job was killed): zipped {session.with_suffix('')}"
        )
    offline.check_session(session)
    if not server_configured():
        raise UsageError(
            "no ClearML server is configured",
            "run `clearml-init` or set CLEARML_API_HOST and the CLEARML_API_* keys",
        )
    result = offline.import_session(app.client(), session)
    if as_json:
        ui.as_json(result)
    else:
        ui.data(result.task_id)
        if result.model_id:
            ui.info(f"registered model {result.model_id}")
    if result.status == FAILED:
        ui.warn("the run had failed offline: imported as failed, with no model registered")
    ui.next_steps([f"ak-remote status {result.task_id}", f"ak-remote compare {result.task_id}"])
