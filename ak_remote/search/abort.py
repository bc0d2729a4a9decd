"""Stopping a search without a race: its controller first, then the trials it left in flight.

Stopping a search's controller and its trials in one call let a controller that was still
running create a retry after them (seen once in four). So `ak-remote abort SEARCH` asks the
controller to stop, waits until it has (an agent ends its process within seconds; a controller
run in a terminal notices the request at its next poll and creates nothing more, see
`ClearMLBackend.stop_requested`), and only then stops the trials still queued or running, looking
once more a moment later for any created in the last instant.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ak_remote.clearml_api import Client
from ak_remote.contract import FINAL_STATUSES
from ak_remote.launcher.runs import AbortResult, abort, check_task_ids
from ak_remote.search.read import in_flight, is_search, search_children

# How long `abort` waits for a controller to stop before it stops the trials anyway.
CONTROLLER_STOP_WAIT_S = 60.0
# A second look for trials created while the controller was stopping.
SECOND_LOOK_S = 2.0


@dataclass
class SearchAbort:
    """What `abort` did: the runs stopped, and the controllers that had not stopped in time."""

    result: AbortResult
    still_running: list[str] = field(default_factory=list)


def abort_with_trials(
    client: Client,
    ids: Sequence[str],
    delete: bool = False,
    wait_s: float = CONTROLLER_STOP_WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> SearchAbort:
    """Stop runs; a search's controller first, then its trials in flight. Raises UsageError."""
    wanted = check_task_ids(ids)
    searches = [
        str(t["id"])
        for t in client.get_tasks(ids=wanted, only_fields=["system_tags"])
        if is_search(t)
    ]
    result = abort(client, wanted, delete=delete)
    if not searches:
        return SearchAbort(result)
    waiting = [s for s in searches if s not in result.already_final and not delete]
    deadline = clock() + wait_s
    while waiting and clock() < deadline:
        found = client.get_tasks(ids=waiting, only_fields=["id", "status"])
        waiting = [str(t["id"]) for t in found if t.get("status") not in FINAL_STATUSES]
        if waiting:
            sleep(1.0)
    for look in range(2):
        trials = [i for s in searches for i in in_flight(search_children(client, s))]
        trials = [i for i in trials if i not in result.stopped]
        if trials:
            more = abort(client, trials, delete=delete)
            result.stopped += more.stopped
            result.deleted += more.deleted
            result.refused.update(more.refused)
        if look == 0:
            sleep(SECOND_LOOK_S)
    return SearchAbort(result, waiting)
