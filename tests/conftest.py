"""Shared test fixtures, for every tier: every test runs with its own HOME and no ClearML settings
from outside, and no clearml-agent a test started outlives the session. Plain helper functions
are in tests/helpers.py."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from ak_remote.clearml_api import client_from_config
from ak_remote.launcher import templates
from tests import processes

# Emulator fixtures (tests/emulator/fixtures.py) are imported here so every test module sees them.
from tests.emulator.fixtures import clearml_emulator  # noqa: F401
from tests.emulator.server import Emulator
from tests.helpers import STRIPPED_ENV, TEMPLATES, Wire
from tests.secret_forms import DataServer, Form, Secret


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Give each test a fresh HOME and strip ClearML/ak-remote settings inherited from the shell."""
    home = tmp_path / "home"
    home.mkdir()
    for name in list(os.environ):
        if name.startswith(STRIPPED_ENV):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    return home


@pytest.fixture(autouse=True)
def keras_heap_frozen() -> Iterator[None]:
    """Once Keras is loaded, keep its heap out of the garbage collector's full passes.

    Keras' `clear_session()` (AutoKeras and Keras Tuner call it for every model they build)
    runs `gc.collect()`, and with TensorFlow's import-time objects on the heap each pass takes
    about 0.16 s: the in-process search tests spent most of their time there (27 s measured for
    three files, 8 s with this). After the first test that loaded Keras, what is on the heap is
    frozen once (`gc.freeze()`, the standard library's tool for long-lived heaps).
    """
    yield
    global _keras_frozen
    if not _keras_frozen and "keras" in sys.modules:
        gc.collect()
        gc.freeze()
        _keras_frozen = True


_keras_frozen = False


@pytest.fixture
def home(isolated_home: Path) -> Path:
    """The test's HOME, for the processes it starts (`job_env(home)`)."""
    return isolated_home


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started: any still running at its end is killed, so none is left
    behind a failed assertion."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def synced_server(clearml_emulator: Emulator) -> Emulator:  # noqa: F811
    """The emulator with the job templates synced and a `cpu` queue."""
    templates.sync(client_from_config(), TEMPLATES, "reg/w:1", "")
    clearml_emulator.create_queue("cpu")
    return clearml_emulator


@pytest.fixture
def agent_emulator(
    clearml_emulator: Emulator,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Emulator:
    """The emulator, for a test whose runs a real clearml-agent carries out: the CLI polls it
    every second (`--wait`), and the test's folder is the working directory."""
    monkeypatch.setenv("AK_REMOTE_POLL_INTERVAL", "1")
    monkeypatch.chdir(tmp_path)
    return clearml_emulator


@pytest.fixture
def gpu_server(clearml_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:  # noqa: F811
    """The emulator with the job templates synced (a GPU image), a `gpu` queue, fast retries,
    and an empty request log."""
    monkeypatch.setenv("AK_REMOTE_HTTP_BACKOFF", "0.01")
    monkeypatch.setenv("AK_REMOTE_HTTP_ATTEMPTS", "3")
    templates.sync(client_from_config(), TEMPLATES, "reg/ak-remote-worker:1-gpu", "--ipc=host")
    clearml_emulator.create_queue("gpu")
    clearml_emulator.reset_log()
    return clearml_emulator


@pytest.fixture
def secret(form: Form) -> Secret:
    """A fresh secret of the test's form (tests/secret_forms.py)."""
    return form.new_secret()


@pytest.fixture
def data_server(form: Form, secret: Secret) -> Iterator[DataServer]:
    """The loopback data server, granting the test's form's secret."""
    served = DataServer(form.key(secret))
    yield served
    served.close()


@pytest.fixture
def wire(clearml_emulator: Emulator) -> Wire:  # noqa: F811
    """Raw HTTP to the emulator (tests/helpers.py, Wire): for checks of the emulator itself."""
    if not getattr(clearml_emulator, "is_emulator", False):
        pytest.skip("wire-level checks of the emulator itself")
    return Wire(clearml_emulator)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """Every process a test starts, its fixtures' included, carries the test's id."""
    os.environ[processes.TEST_VAR] = item.nodeid
    try:
        return (yield)
    finally:
        os.environ.pop(processes.TEST_VAR, None)


@pytest.fixture(scope="session", autouse=True)
def no_agent_outlives_the_session() -> Iterator[None]:
    """Fail the session when a clearml-agent started by a test is still running at its end.

    Such a daemon polls its (gone) server forever. It is killed here and named with the test
    that started it, so a leak shows up as an error instead of an idle process on the machine.
    """
    tag = processes.new_session_tag()
    previous = os.environ.get(processes.SESSION_VAR)
    os.environ[processes.SESSION_VAR] = tag
    yield
    if previous is None:
        os.environ.pop(processes.SESSION_VAR, None)
    else:
        os.environ[processes.SESSION_VAR] = previous
    leftovers = processes.leftover_agents(tag)
    if leftovers:
        below = processes.kill(leftovers)
        lines = "\n".join(f"  pid {p.pid}, started by {p.test}: {p.command}" for p in leftovers)
        if below:
            lines += f"\n  and what they ran: pids {', '.join(map(str, below))}"
        pytest.fail(f"{len(leftovers)} clearml-agent process(es) outlived the tests:\n{lines}")
