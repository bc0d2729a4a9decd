"""Integration tier (the SDK in fresh interpreters against the emulator). Clients with
credentials of their own: the request log says which client made each call (what the
controller-overhead benchmark counts with)."""

from __future__ import annotations

import os
import sys

from tests.emulator.server import Emulator
from tests.helpers import run_captured

SDK_CALLS = "from clearml import Task; Task.get_tasks(project_name='x'); print('ok')"


def test_each_client_s_calls_are_told_apart(clearml_emulator: Emulator) -> None:
    emulator = clearml_emulator
    first, second = emulator.add_client("first"), emulator.add_client("second")
    for env in (first, second, second):
        done = run_captured([sys.executable, "-c", SDK_CALLS], {**os.environ, **env}, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    ones, twos = emulator.calls_by(first), emulator.calls_by(second)
    assert ones
    assert len(twos) == 2 * len(ones)  # the same calls, twice
    assert {c.endpoint for c in ones} >= {"auth.login"}
    assert not {id(c) for c in ones} & {id(c) for c in twos}
    # The default credentials still work, and their calls are not either client's.
    assert all(c.key == emulator.access_key for c in emulator.requests if c not in ones + twos
               and c.key)  # fmt: skip
