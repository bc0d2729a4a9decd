"""ak_remote.summary: the typed, versioned run summary (summary.json), JSON in and out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ak_remote.catalog import PROJECT_ROOT
from ak_remote.contract import RUN_RUNNING, SUMMARY_FILE
from ak_remote.errors import DataError, ExitCode
from ak_remote.summary import (
    SUMMARY_VERSION,
    AttemptRecord,
    ControllerRecord,
    DataRecord,
    ExportRecord,
    LocalSearch,
    RunSummary,
    SearchPartRecord,
    ServingRecord,
    TrialRecord,
    read_summary,
)


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / SUMMARY_FILE
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_a_new_summary_is_whole_readable_and_versioned(tmp_path: Path) -> None:
    summary = RunSummary(job="image-classifier")
    assert summary.status == RUN_RUNNING
    data = json.loads(summary.to_json())
    assert data["schema_version"] == SUMMARY_VERSION
    assert data["metrics"] == {}
    assert data["data"] is None
    assert read_summary(write(tmp_path, data)) == summary


def test_every_record_goes_through_json_and_back(tmp_path: Path) -> None:
    controller = ControllerRecord(
        search_id="s",
        parallel=2,
        objective="val_loss",
        best_trial="01",
        best_objective=0.25,
        trials=[
            TrialRecord(
                trial="01",
                state="completed",
                objective=0.25,
                values={"dense_block_1/units": 32, "optimizer": "adam"},
                attempts=[AttemptRecord(handle="h", status="completed", worker="w")],
            )
        ],
    )
    summary = RunSummary(
        job="structured-classifier",
        status="completed",
        params={"epochs": "2"},
        data=DataRecord(source="wine", fingerprint="f" * 64, n_total=178, classes=["0", "1"]),
        metrics={"test_accuracy": 0.9, "train_seconds": 3},
        export=ExportRecord(
            formats={"keras": "models/model.keras"},
            checksums={"models/model.keras": "0" * 64},
            verification={"passed": True, "max_abs_diff": {"keras": 0.0}},
            serving=ServingRecord(path="serving/1", signatures=["serve"]),
        ),
        search=controller,
    )
    back = read_summary(write(tmp_path, summary.to_dict()))
    assert back == summary
    assert isinstance(back.search, ControllerRecord)
    assert back.search.trials[0].attempts[0].worker == "w"
    assert back.metrics["train_seconds"] == 3.0
    assert back.fingerprint == "f" * 64
    # The three shapes of `search` are told apart by their role.
    for record in (LocalSearch(resumed=True), SearchPartRecord(role="trial", trial="03")):
        again = RunSummary.from_dict(RunSummary(search=record).to_dict())
        assert again.search == record


def test_keys_of_a_newer_writer_are_kept(tmp_path: Path) -> None:
    data = {**RunSummary(job="x").to_dict(), "energy_kwh": 1.5}
    summary = read_summary(write(tmp_path, data))
    assert summary.unknown == {"energy_kwh": 1.5}
    assert json.loads(summary.to_json())["energy_kwh"] == 1.5


def test_a_newer_summary_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, {"schema_version": SUMMARY_VERSION + 1, "status": "x"})
    with pytest.raises(DataError) as info:
        read_summary(path)
    assert "newer ak-remote" in info.value.message
    assert info.value.hint is not None
    assert "upgrade" in info.value.hint
    assert info.value.exit_code == ExitCode.DATA


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[1, 2]", "not a run summary"),
        ('{"status": "exploded"}', "unknown status"),
        ('{"schema_version": "one"}', "invalid schema_version"),
        ('{"params": [1]}', "params must be an object"),
        ('{"data": {"n_total": "many"}}', "data: n_total must be int"),
        ('{"metrics": {"test_accuracy": "high"}}', "metrics.test_accuracy must be float"),
        ('{"export": {"serving": {"signatures": "serve"}}}', "serving: signatures must be a list"),
        ('{"search": {"role": "controller", "trials": [{"attempts": 3}]}}', "attempts must be"),
        ("{not json", "cannot read"),
    ],
)
def test_bad_summaries_are_data_errors_naming_the_field(
    tmp_path: Path, text: str, fragment: str
) -> None:
    with pytest.raises(DataError, match=fragment):
        read_summary(write(tmp_path, text))


def test_missing_summary_says_so(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_summary(tmp_path / SUMMARY_FILE)


def test_the_readme_documents_every_field() -> None:
    """The README's schema table names every top-level field of summary.json, and no other."""
    import dataclasses
    import re

    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The run summary: summary.json", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
    fields = {f.name for f in dataclasses.fields(RunSummary)} - {"unknown"}
    assert documented == fields
