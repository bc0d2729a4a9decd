"""Dataset references: what `dataset=` may name, checked cheaply before anything is created.

Pure Python on purpose (no numpy, no TensorFlow, no ClearML at import): the launcher checks a
dataset before it creates a task, and the job runtime checks it once more (the values an agent
runs with are the server's) and passes the checked `DatasetRef` to the loader
(`ak_remote.runtime.data`).

Accepted forms:
- a bundled name (scikit-learn's sets that ship in its wheel, plus `reviews`, a small synthetic
  text set of `ak_remote.datasets.reviews`), per job family and kind;
- a local path: a CSV file for structured and text jobs; an image folder (`root/<class>/*.png`)
  or an `.npz` file with `x` and `y` arrays for image jobs;
- a URL or bucket path that ClearML's StorageManager fetches (http, https, s3, gs, azure),
  with credentials only as ${NAME} placeholders (`ak_remote.datasets.secrets`);
- `clearml://<dataset id>`: a ClearML Dataset, fetched with `Dataset.get(...).get_local_copy()`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse, urlsplit, urlunsplit

from ak_remote.contract import is_task_id
from ak_remote.datasets.secrets import (
    BUCKET_HINT,
    BUCKET_SCHEMES,
    PLACEHOLDER,
    PLACEHOLDER_RULE,
    PLACEHOLDERS_ONLY,
    URL_CREDENTIALS,
    expand_placeholders,
    mask_credentials,
)
from ak_remote.errors import UsageError

FAMILIES = ("image", "text", "structured")
KINDS = ("classifier", "regressor")


@dataclass(frozen=True)
class BundledDataset:
    """A dataset that needs no network: which job families and kinds it serves."""

    name: str
    families: tuple[str, ...]
    kinds: tuple[str, ...]
    description: str


BUNDLED: dict[str, BundledDataset] = {
    item.name: item
    for item in (
        BundledDataset(
            "digits",
            ("image", "structured"),
            KINDS,
            "1797 8x8 grayscale handwritten digits (target: the digit)",
        ),
        BundledDataset(
            "wine", ("structured",), ("classifier",), "178 wines, 13 features, 3 cultivars"
        ),
        BundledDataset(
            "iris", ("structured",), ("classifier",), "150 irises, 4 features, 3 species"
        ),
        BundledDataset(
            "breast_cancer",
            ("structured",),
            ("classifier",),
            "569 tumours, 30 features, malignant or benign",
        ),
        BundledDataset(
            "diabetes",
            ("structured",),
            ("regressor",),
            "442 patients, 10 features, disease progression after a year",
        ),
        BundledDataset(
            "reviews",
            ("text",),
            KINDS,
            "400 synthetic product reviews (classifier: sentiment; regressor: 1-5 stars)",
        ),
    )
}

# What a local file or a fetched copy may be, per family. Directories are image folders.
LOCAL_SUFFIXES: dict[str, tuple[str, ...]] = {
    "image": (".npz",),
    "text": (".csv",),
    "structured": (".csv",),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# StorageManager unpacks these after download (extract_archive=True), e.g. a zipped image folder.
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
REMOTE_SCHEMES = ("http", "https", "s3", "gs", "azure")
CLEARML_SCHEME = "clearml://"


@dataclass(frozen=True)
class DatasetRef:
    """A checked dataset reference: `kind` is bundled, local, remote or clearml."""

    kind: str
    value: str  # the bundled name, the absolute local path, the URL, or the dataset id

    @property
    def source(self) -> str:
        """How summaries and task names show it (credentials in a URL masked)."""
        return (
            f"{CLEARML_SCHEME}{self.value}"
            if self.kind == "clearml"
            else mask_credentials(self.value)
        )


def expand_reference(
    reference: str, family: str, kind: str, environ: Mapping[str, str] | None = None
) -> tuple[str, list[str]]:
    """`expand_placeholders`, and for a whole-value placeholder a check that the variable
    holds a URL this job can read (its messages name the variable, never the value).

    Raises UsageError.
    """
    url, secrets = expand_placeholders(reference, environ)
    whole = PLACEHOLDER.fullmatch(reference.strip())
    if whole is None:
        return url, secrets
    name = whole.group(0)
    parts = urlsplit(url)
    if parts.scheme not in REMOTE_SCHEMES or not parts.netloc:
        raise UsageError(
            f"dataset {name} does not hold a URL",
            f"set {whole.group('name')} to the dataset's full URL "
            f"({', '.join(s + '://' for s in REMOTE_SCHEMES)}), e.g. a presigned https:// URL",
        )
    if "${" in url:
        raise UsageError(
            f"dataset {name} holds a URL with a ${{...}} placeholder, which is not expanded again",
            f"set {whole.group('name')} to the URL itself, secrets included",
        )
    _, at, host = parts.netloc.rpartition("@")
    if at and parts.scheme in BUCKET_SCHEMES:
        raise UsageError(f"dataset {name} holds a bucket URL with credentials", BUCKET_HINT)
    try:  # scheme, host and path only: what the checks need, and nothing secret
        check_reference(urlunsplit((parts.scheme, host, parts.path, "", "")), family, kind)
    except UsageError as exc:
        raise UsageError(f"dataset {name}: {exc.message}", exc.hint) from None
    return url, secrets


def bundled_for(family: str, kind: str) -> list[str]:
    """The bundled dataset names a job of this family and kind can train on."""
    return [
        name for name, item in BUNDLED.items() if family in item.families and kind in item.kinds
    ]


def check_reference(reference: str, family: str, kind: str) -> DatasetRef:
    """Classify and cheaply check `reference` for a job of `family`/`kind`.

    Touches only the local file system (never the network). Raises UsageError saying what is
    wrong and what would work.
    """
    if family not in FAMILIES or kind not in KINDS:
        raise ValueError(f"unknown job family/kind {family}/{kind}")
    ref = reference.strip()
    shown = mask_credentials(ref)  # what messages may print
    if not ref:
        raise UsageError("dataset is empty", _choices_hint(family, kind))
    if PLACEHOLDER.fullmatch(ref):
        # A whole URL from the worker's environment (a presigned URL, say): its form is checked
        # where it is expanded (`expand_reference`).
        return DatasetRef("remote", ref)
    if ref.startswith(CLEARML_SCHEME):
        dataset_id = ref[len(CLEARML_SCHEME) :].strip("/")
        if not is_task_id(dataset_id):
            raise UsageError(
                f"{shown!r} is not a ClearML dataset id",
                "use clearml://<32-character id>, as `clearml-data list` shows it",
            )
        return DatasetRef("clearml", dataset_id)
    parsed = urlparse(ref)
    if parsed.scheme == "file":
        return _check_local(Path(parsed.path), shown, family)
    # A one-letter scheme is a Windows drive ("C:\\data.csv"), not a URL.
    if len(parsed.scheme) > 1:
        if parsed.scheme not in REMOTE_SCHEMES:
            raise UsageError(
                f"unsupported dataset URL scheme {parsed.scheme!r} in {shown!r}",
                f"use one of {', '.join(s + '://' for s in REMOTE_SCHEMES)} or clearml://ID",
            )
        if not parsed.netloc:
            raise UsageError(
                f"dataset URL {shown!r} has no host or bucket", "e.g. s3://bucket/x.csv"
            )
        if "@" in parsed.netloc and parsed.scheme in BUCKET_SCHEMES:
            raise UsageError(f"dataset URL {shown!r} has credentials in a bucket URL", BUCKET_HINT)
        _check_placeholders(ref, shown)
        suffix = _suffix(parsed.path)
        allowed = LOCAL_SUFFIXES[family] + ARCHIVE_SUFFIXES
        if suffix and suffix not in allowed:
            raise UsageError(
                f"{family} jobs cannot read {suffix} files ({shown})",
                f"point to one of: {', '.join(allowed)}",
            )
        return DatasetRef("remote", ref)
    if "${" in ref:
        raise UsageError(
            f"dataset {shown!r} has a ${{...}} placeholder but is not a URL", PLACEHOLDER_RULE
        )
    if ref in BUNDLED:
        item = BUNDLED[ref]
        if family not in item.families or kind not in item.kinds:
            raise UsageError(
                f"bundled dataset {shown!r} does not fit a {family} {kind}",
                _choices_hint(family, kind),
            )
        return DatasetRef("bundled", ref)
    looks_like_path = any(sep in ref for sep in ("/", "\\")) or "." in ref
    if not looks_like_path:
        raise UsageError(f"unknown dataset {shown!r}", _choices_hint(family, kind))
    return _check_local(Path(ref).expanduser(), shown, family)


def _check_placeholders(ref: str, shown: str) -> None:
    """${NAME} placeholders well formed, and only in the user:password part or as whole query
    values (where the worker expands them)."""
    if "${" in PLACEHOLDER.sub("", ref):
        raise UsageError(
            f"dataset URL {shown!r} has a malformed ${{...}} placeholder", PLACEHOLDER_RULE
        )
    match = URL_CREDENTIALS.match(ref)
    rest = ref[match.end() :] if match else ref
    body, _, fragment = rest.partition("#")
    path, _, query = body.partition("?")
    values = [item.partition("=") for item in re.split("[&;]", query)]
    if "${" in path + fragment or any(
        "${" in name or ("${" in value and not PLACEHOLDERS_ONLY.fullmatch(value))
        for name, _, value in values
    ):
        raise UsageError(
            f"dataset URL {shown!r} has a ${{...}} placeholder outside its user:password part "
            "and query values",
            PLACEHOLDER_RULE,
        )


def check_for_agent(reference: str, family: str, kind: str) -> DatasetRef:
    """Like `check_reference`, for a run an agent executes: a local path is refused.

    An agent runs on another machine and cannot see this one's files, so a path (even one that
    exists here) would only fail there, after the run was queued. Raises UsageError.
    """
    ref = reference.strip()
    parsed = urlparse(ref)
    local = parsed.scheme == "file" or (
        len(parsed.scheme) <= 1
        and ref not in BUNDLED
        and (any(sep in ref for sep in ("/", "\\")) or "." in ref)
    )
    if local:
        raise UsageError(
            f"dataset {mask_credentials(ref)!r} is a path on this machine, and an agent cannot "
            "see this machine's files",
            "upload it (clearml-data create/add/close) and pass clearml://DATASET_ID, "
            "or pass a URL the agent can fetch",
        )
    return check_reference(ref, family, kind)


def _check_local(path: Path, ref: str, family: str) -> DatasetRef:
    if not path.exists():
        raise UsageError(
            f"dataset path {ref!r} does not exist", "check the path, relative to the current folder"
        )
    if path.is_dir():
        if family != "image":
            raise UsageError(
                f"{ref!r} is a folder; {family} jobs read a CSV file", "point to the .csv file"
            )
        if not any(child.is_dir() for child in path.iterdir()):
            raise UsageError(
                f"image folder {ref!r} has no class subfolders",
                "lay it out as <folder>/<class name>/<image>.png",
            )
        return DatasetRef("local", str(path.resolve()))
    suffix = _suffix(path.name)
    if suffix not in LOCAL_SUFFIXES[family]:
        accepted = ", ".join(LOCAL_SUFFIXES[family])
        extra = " or an image folder" if family == "image" else ""
        raise UsageError(
            f"{family} jobs cannot read {suffix or 'files without a suffix'} ({ref})",
            f"use {accepted}{extra}",
        )
    if path.stat().st_size == 0:
        raise UsageError(f"dataset file {ref!r} is empty", "point to a file with data")
    return DatasetRef("local", str(path.resolve()))


def _suffix(name: str) -> str:
    lower = name.lower()
    for double in (".tar.gz",):
        if lower.endswith(double):
            return double
    return Path(lower).suffix


def _choices_hint(family: str, kind: str) -> str:
    names = ", ".join(bundled_for(family, kind))
    local = "a .csv file" if family != "image" else "an image folder or .npz file"
    return f"use a bundled name ({names}), {local}, a URL, or clearml://DATASET_ID"
