"""CLI behaviour that needs no server and no training: help, errors, exit codes, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ak_remote.catalog import JOBS
from ak_remote.cli import COMMANDS
from tests.helpers import invoke, outcome


def test_help_lists_every_command() -> None:
    code, out, _ = outcome(invoke("--help"))
    assert code == 0
    for name in COMMANDS:
        assert f"  {name} " in out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help(name: str) -> None:
    code, out, err = outcome(invoke(name, "--help"))
    assert code == 0, err
    assert "Usage: " in out
    assert name in out


def test_version() -> None:
    from ak_remote import __version__

    code, out, _ = outcome(invoke("--version"))
    assert code == 0
    assert __version__ in out


def test_jobs_lists_all_jobs_as_json() -> None:
    code, out, _ = outcome(invoke("jobs", "--json"))
    assert code == 0
    assert set(json.loads(out)) == set(JOBS)


def test_jobs_shows_parameters_of_one_job() -> None:
    code, out, _ = outcome(invoke("jobs", "structured-classifier", "--json"))
    assert code == 0
    data = json.loads(out)
    assert data["params"]["max_trials"]["type"] == "int"
    assert data["params"]["objective"]["default"] == "val_accuracy"
    assert "wine" in data["bundled_datasets"]


@pytest.mark.parametrize(
    ("argv", "exit_code", "message"),
    [
        (["run", "no-such-job"], 2, "unknown job 'no-such-job' (known jobs: image-classifier"),
        (["run", "image-classifier", "--set", "epoch=3"], 2, "unknown parameter 'epoch'"),
        (
            ["run", "image-classifier", "--set", "epochs=three"],
            2,
            "epochs: 'three' is not a valid int",
        ),
        (["run", "image-classifier", "--set", "epochs=0"], 2, "epochs: 0 is below 1"),
        (["run", "image-classifier", "--set", "tuner=grid"], 2, "tuner: 'grid' is not one of"),
        (["run", "image-classifier", "--set", "epochs"], 2, "--set 'epochs' is not KEY=VALUE"),
        (
            ["run", "image-classifier", "--set", "epochs=1", "--set", "epochs=2"],
            2,
            "gives 'epochs' twice",
        ),
        (["run", "image-classifier", "--set", "dataset=no-such-set"], 2, "no-such-set"),
        (
            ["run", "structured-classifier", "--set", "dataset=/nonexistent/data.csv"],
            2,
            "/nonexistent/data.csv",
        ),
        (["jobs", "nope"], 2, "unknown job 'nope'"),
        (["import-offline", "/nonexistent.zip"], 2, "/nonexistent.zip does not exist"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_and_creates_nothing(
    argv: list[str], exit_code: int, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = outcome(invoke(*argv))
    assert code == exit_code, (out, err)
    assert message in err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: "), err
    assert list(tmp_path.iterdir()) == [tmp_path / "home"] or not (tmp_path / "runs").exists()


def test_import_offline_rejects_a_non_session_zip(tmp_path: Path) -> None:
    import zipfile

    bogus = tmp_path / "bogus.zip"
    with zipfile.ZipFile(bogus, "w") as archive:
        archive.writestr("hello.txt", "hi")
    code, _, err = outcome(invoke("import-offline", str(bogus)))
    assert code == 2
    assert "not a ClearML offline session" in err


def test_import_offline_without_a_server_says_how_to_configure(tmp_path: Path) -> None:
    import zipfile

    session = tmp_path / "session.zip"
    with zipfile.ZipFile(session, "w") as archive:
        archive.writestr("task.json", "{}")
    code, _, err = outcome(invoke("import-offline", str(session)))
    assert code == 2
    assert "no ClearML server is configured" in err
    assert "clearml-init" in err


def test_debug_shows_traceback_for_errors() -> None:
    code, _, err = outcome(invoke("--debug", "run", "no-such-job"))
    assert code == 2
    assert "Traceback" in err
