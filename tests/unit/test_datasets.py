"""Dataset references are checked cheaply and clearly, without numpy or TensorFlow."""

from __future__ import annotations

from pathlib import Path

import pytest

from ak_remote.catalog import JOBS
from ak_remote.datasets.references import BUNDLED, DatasetRef, bundled_for, check_reference
from ak_remote.datasets.reviews import generate_reviews
from ak_remote.errors import ExitCode, UsageError


@pytest.mark.parametrize("job", list(JOBS.values()), ids=list(JOBS))
def test_every_job_default_dataset_is_bundled_for_it(job: object) -> None:
    from ak_remote.catalog import Job

    assert isinstance(job, Job)
    default = str(job.params.defaults()["dataset"])
    assert check_reference(default, job.family, job.kind) == DatasetRef("bundled", default)
    assert default in bundled_for(job.family, job.kind)


@pytest.mark.parametrize(
    ("name", "family", "kind"),
    [
        ("wine", "image", "classifier"),
        ("diabetes", "structured", "classifier"),
        ("iris", "structured", "regressor"),
        ("reviews", "structured", "classifier"),
        ("digits", "text", "classifier"),
    ],
)
def test_bundled_dataset_of_the_wrong_family_or_kind_is_refused(
    name: str, family: str, kind: str
) -> None:
    with pytest.raises(UsageError) as info:
        check_reference(name, family, kind)
    assert f"does not fit a {family} {kind}" in info.value.message
    assert info.value.hint
    assert "bundled name" in info.value.hint
    assert info.value.exit_code == ExitCode.USAGE


def test_unknown_name_lists_the_names_that_would_work() -> None:
    with pytest.raises(UsageError) as info:
        check_reference("mnist", "structured", "classifier")
    assert "unknown dataset 'mnist'" in str(info.value)
    for name in ("digits", "wine", "iris", "breast_cancer"):
        assert name in str(info.value.hint)
    assert "diabetes" not in str(info.value.hint)


def test_local_csv_and_its_failures(tmp_path: Path) -> None:
    table = tmp_path / "table.csv"
    table.write_text("a,b,label\n1,2,x\n")
    assert check_reference(str(table), "structured", "classifier") == DatasetRef(
        "local", str(table.resolve())
    )
    assert check_reference(f"file://{table}", "text", "regressor").kind == "local"
    with pytest.raises(UsageError, match="does not exist"):
        check_reference(str(tmp_path / "missing.csv"), "structured", "classifier")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(UsageError, match="is empty"):
        check_reference(str(empty), "structured", "classifier")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UsageError, match=r"cannot read \.txt"):
        check_reference(str(text), "text", "classifier")
    with pytest.raises(UsageError, match=r"cannot read \.csv"):
        check_reference(str(table), "image", "classifier")


def test_image_folder_and_npz(tmp_path: Path) -> None:
    root = tmp_path / "images"
    (root / "cats").mkdir(parents=True)
    assert check_reference(str(root), "image", "classifier").kind == "local"
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes(b"x")
    with pytest.raises(UsageError, match="no class subfolders"):
        check_reference(str(flat), "image", "classifier")
    with pytest.raises(UsageError, match="is a folder"):
        check_reference(str(root), "structured", "classifier")
    arrays = tmp_path / "data.npz"
    arrays.write_bytes(b"PK")
    assert check_reference(str(arrays), "image", "regressor").kind == "local"


@pytest.mark.parametrize(
    "url",
    [
        "s3://bucket/data/table.csv",
        "gs://bucket/table.csv",
        "azure://account/container/table.csv",
        "https://example.com/data/table.csv",
        "https://example.com/data/table.zip",
        "https://example.com/data/tables.tar.gz",
        "http://example.com/dataset",
    ],
)
def test_storage_urls_are_accepted_without_network(url: str) -> None:
    assert check_reference(url, "structured", "regressor") == DatasetRef("remote", url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/table.csv", "unsupported dataset URL scheme 'ftp'"),
        ("https://example.com/table.parquet", "cannot read .parquet"),
        ("s3:///table.csv", "has no host or bucket"),
        ("clearml://not-an-id", "is not a ClearML dataset id"),
        ("clearml://", "is not a ClearML dataset id"),
        ("  ", "dataset is empty"),
    ],
)
def test_bad_references_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        check_reference(url, "structured", "classifier")
    assert message in info.value.message
    assert info.value.hint


def test_clearml_dataset_id() -> None:
    ref = check_reference("clearml://0123456789abcdef0123456789abcdef", "image", "classifier")
    assert ref == DatasetRef("clearml", "0123456789abcdef0123456789abcdef")
    assert ref.source == "clearml://0123456789abcdef0123456789abcdef"


def test_reviews_are_deterministic_and_labelled_consistently() -> None:
    first, again = generate_reviews(), generate_reviews()
    assert first == again
    assert len(first) == 400
    assert {review.rating for review in first} == {1, 2, 3, 4, 5}
    for review in first:
        expected = (
            "negative" if review.rating <= 2 else "neutral" if review.rating == 3 else "positive"
        )
        assert review.sentiment == expected
        assert 20 < len(review.text) < 200
    assert generate_reviews(seed=1) != first
    assert set(BUNDLED) >= {"digits", "wine", "iris", "breast_cancer", "diabetes", "reviews"}
