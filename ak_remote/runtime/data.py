"""The one dataset resolver of the jobs: load a checked reference into arrays, split it, hash it.

Needs numpy (and scikit-learn for the bundled sets, Pillow for image folders, the ClearML SDK for
remote references) but never TensorFlow, so it stays quick to test.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np

from ak_remote.datasets.references import (
    ARCHIVE_SUFFIXES,
    IMAGE_SUFFIXES,
    LOCAL_SUFFIXES,
    DatasetRef,
    check_reference,
    expand_reference,
)
from ak_remote.datasets.reviews import generate_reviews
from ak_remote.datasets.secrets import placeholder_names, redact
from ak_remote.errors import DataError, UsageError
from ak_remote.model.serving import image_pixels, input_keys, is_grayscale, number_problem

MIN_SAMPLES = 10  # below this a train/validation/test split leaves a part empty


@dataclass
class Dataset:
    """Inputs and targets of one job, plus what inference needs to know about them."""

    x: np.ndarray[Any, Any]  # images (n, h, w[, c]) float32; texts (n,) str; tables (n, d)
    y: np.ndarray[Any, Any]  # class labels as str, or float32 regression targets
    source: str
    target_name: str = "target"
    columns: list[str] = field(default_factory=list)  # structured: feature columns
    column_types: dict[str, str] = field(default_factory=dict)  # numerical or categorical
    text_column: str | None = None
    notes: list[str] = field(default_factory=list)  # what loading did that the user should know

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class Split:
    """Seeded split into train, validation and test, as indices into the loaded dataset.

    AutoKeras gets train+validation with `validation_split` and takes the *last* part as
    validation (autokeras.utils.data_utils.split_dataset); `train_val` is ordered so that its
    tail is exactly `val`, which keeps the recorded split true.
    """

    seed: int
    n_total: int
    train: np.ndarray[Any, Any]
    val: np.ndarray[Any, Any]
    test: np.ndarray[Any, Any]

    @property
    def train_val(self) -> np.ndarray[Any, Any]:
        return np.concatenate([self.train, self.val])

    @property
    def autokeras_validation_split(self) -> float:
        """The fraction that makes AutoKeras' tail split equal to `val`."""
        return len(self.val) / (len(self.train) + len(self.val))

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "n_total": self.n_total,
            "train": self.train.tolist(),
            "validation": self.val.tolist(),
            "test": self.test.tolist(),
        }

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()


def load(reference: str | DatasetRef, family: str, kind: str, target: str = "") -> Dataset:
    """Resolve (unless already checked) and load `reference` for a job; raises DataError for
    anything unusable."""
    try:
        ref = (
            reference
            if isinstance(reference, DatasetRef)
            else check_reference(reference, family, kind)
        )
    except UsageError as exc:  # inside a job a bad dataset is a data error (exit 3)
        raise DataError(exc.message, exc.hint) from None
    if ref.kind == "bundled":
        data = _load_bundled(ref.value, family, kind)
    else:
        with _local_copy(ref, family, kind) as path:
            data = _load_path(path, family, kind, target, ref.source)
    _check(data, family, kind)
    return data


def split(data: Dataset, seed: int, test_split: float, validation_split: float, cap: int) -> Split:
    """Shuffle with `seed`, keep at most `cap` samples (0: all), hold out test then validation.

    Raises DataError when too few samples remain for three non-empty parts.
    """
    n = len(data)
    order = np.random.default_rng(seed).permutation(n)
    if cap:
        order = order[:cap]
    kept = len(order)
    if kept < MIN_SAMPLES:
        raise DataError(
            f"only {kept} samples to split into train, validation and test",
            f"use a dataset (or max_samples) with at least {MIN_SAMPLES} samples",
        )
    n_test = max(1, round(kept * test_split))
    rest = kept - n_test
    # Same rounding as AutoKeras' split_dataset, so the recorded validation part is its part.
    n_val = min(max(int(rest * validation_split), 1), rest - 1)
    test, train_val = order[:n_test], order[n_test:]
    return Split(seed, n, train_val[: rest - n_val], train_val[rest - n_val :], test)


def fingerprint(data: Dataset) -> str:
    """sha256 over the arrays (dtype, shape and bytes), the dataset's identity in summaries."""
    digest = hashlib.sha256()
    for array in (data.x, data.y):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def class_names(data: Dataset) -> list[str]:
    return sorted({str(label) for label in data.y.tolist()})


# --- loaders ---------------------------------------------------------------------------------


def _load_bundled(name: str, family: str, kind: str) -> Dataset:
    if name == "reviews":
        reviews = generate_reviews()
        x = np.array([review.text for review in reviews])
        if kind == "classifier":
            y = np.array([review.sentiment for review in reviews])
            return Dataset(x, y, name, "sentiment", text_column="text")
        y = np.array([review.rating for review in reviews], dtype="float32")
        return Dataset(x, y, name, "rating", text_column="text")

    from sklearn import datasets as sk  # imported here: only bundled sets need scikit-learn

    loader = {
        "digits": sk.load_digits,
        "wine": sk.load_wine,
        "iris": sk.load_iris,
        "breast_cancer": sk.load_breast_cancer,
        "diabetes": sk.load_diabetes,
    }[name]
    bunch = loader()
    if name == "digits" and family == "image":
        # scikit-learn's digits are 0-16 intensities; scaled to 0-255 as an image folder loads
        # (and as image files store them), so the serving model takes digit PNGs as they are.
        x = np.round(np.asarray(bunch.images, dtype="float32") * (255.0 / 16.0))
    else:
        x = np.asarray(bunch.data, dtype="float32")
    target = np.asarray(bunch.target)
    if kind == "classifier":
        names = getattr(bunch, "target_names", None)
        labels = [str(names[i]) for i in target] if names is not None else target.astype(str)
        y = np.array(labels)
    else:
        y = target.astype("float32")
    columns = (
        [str(c) for c in getattr(bunch, "feature_names", [])] if family == "structured" else []
    )
    if family == "structured" and not columns:
        columns = [f"f{i}" for i in range(x.shape[1])]
    types = dict.fromkeys(columns, "numerical")
    return Dataset(x, y, name, "target", columns, types)


class _MaskCredentials(logging.Filter):
    """Masks user:password@, secret query values and the expanded values in a log record (the
    SDK logs the URL it failed to download, urllib3 the path and query it requests)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage(), self.secrets), ()
        return True


_MASKED_LOGGERS = ("clearml", "clearml.storage", "urllib3", "urllib3.connectionpool", "requests")


def _mask_sdk_logs(secrets: Sequence[str]) -> None:
    """Put the masking filter on every ClearML and HTTP client logger (filters apply where a
    record is made, not where it propagates to)."""
    families = {name.split(".")[0] for name in _MASKED_LOGGERS}
    names = [n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in families]
    for name in dict.fromkeys([*_MASKED_LOGGERS, *names]):
        logger = logging.getLogger(name)
        found = [f for f in logger.filters if isinstance(f, _MaskCredentials)]
        masking = found[0] if found else _MaskCredentials()
        if not found:
            logger.addFilter(masking)
        masking.secrets = [*masking.secrets, *secrets]


@contextmanager
def _local_copy(ref: DatasetRef, family: str, kind: str) -> Iterator[Path]:
    """The dataset as a local file or folder, for as long as the block loads it."""
    if ref.kind == "local":
        yield Path(ref.value)
        return
    from ak_remote.runtime import tracking  # ClearML's SDK, only for remote data

    if ref.kind == "clearml":
        yield tracking.fetch_dataset(ref.value)
        return
    # ${NAME} placeholders are expanded here, at the last moment: the expanded URL lives only
    # in this call (never in parameters, summaries or messages).
    try:
        url, secrets = expand_reference(ref.value, family, kind)
    except UsageError as exc:  # inside a job a dataset it cannot use is a data error
        raise DataError(exc.message, exc.hint) from None
    _mask_sdk_logs(secrets)
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and ("@" in parts.netloc or parts.query or secrets):
        # Not through StorageManager (clearml 2.1.12): its cache names a folder after the URL's
        # host part, user:password included, and a file after the URL's last segment, query
        # included (`<md5>.data.csv?token=...`): either would write the secret to disk.
        with tempfile.TemporaryDirectory(prefix="ak-remote-data-") as folder:
            yield _fetch_http(url, ref, secrets, Path(folder))
        return
    yield tracking.fetch_url(url, ref.source, secrets)


def _fetch_http(url: str, ref: DatasetRef, secrets: Sequence[str], folder: Path) -> Path:
    """Download `url` into `folder` (archives unpacked), named after its path alone; a
    user:password part becomes HTTP basic auth, out of the request URL. Raises DataError."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    parts = urlsplit(url)
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    bare = urlunsplit((parts.scheme, host, parts.path, parts.query, ""))
    names = placeholder_names(ref.value)
    hint = (
        f"check {', '.join(f'${{{n}}}' for n in names)} in the environment the job runs in"
        if names
        else "check the URL and its credentials"
    )
    name = Path(unquote(parts.path)).name
    target = folder / (name if name not in ("", ".", "..") else "data")
    retry = Retry(total=3, backoff_factor=0.5, status_forcelist=(502, 503, 504))
    session = requests.Session()
    session.mount(f"{parts.scheme}://", HTTPAdapter(max_retries=retry))
    auth = (unquote(user), unquote(password)) if userinfo else None
    try:
        with session.get(bare, auth=auth, stream=True, timeout=(30, 300)) as response:
            if response.status_code != 200:
                raise DataError(
                    f"could not fetch {ref.source}: HTTP {response.status_code} "
                    f"{redact(str(response.reason), secrets)}",
                    hint,
                )
            with target.open("wb") as out:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    out.write(chunk)
    except requests.RequestException as exc:
        message = redact(f"{type(exc).__name__}: {exc}", secrets).splitlines()[0][:300]
        raise DataError(f"could not fetch {ref.source}: {message}", hint) from None
    finally:
        session.close()
    if not target.name.lower().endswith(ARCHIVE_SUFFIXES):
        return target
    unpacked = folder / "unpacked"
    try:
        if target.name.lower().endswith(".zip"):
            with zipfile.ZipFile(target) as archive:  # drops '..' and absolute member paths
                archive.extractall(unpacked)
        else:
            with tarfile.open(target) as archive:
                archive.extractall(unpacked, filter="data")  # no paths outside, no devices
    except (OSError, ValueError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise DataError(f"could not unpack {ref.source}: {exc}", "check the archive") from None
    return unpacked


def _load_path(path: Path, family: str, kind: str, target: str, source: str) -> Dataset:
    if path.is_dir():
        path = _pick_in_folder(path, family, source)
    if path.is_dir():
        return _load_image_folder(path, kind, source)
    suffix = path.suffix.lower()
    if suffix not in LOCAL_SUFFIXES[family]:
        raise DataError(f"{family} jobs cannot read {path.name} ({source})")
    if suffix == ".npz":
        return _load_npz(path, kind, source)
    header, rows = _read_csv(path, source)
    if family == "text":
        return _text_from_table(header, rows, kind, target, source)
    return _structured_from_table(header, rows, kind, target, source)


def _pick_in_folder(folder: Path, family: str, source: str) -> Path:
    """A fetched folder (unpacked archive or dataset copy): one data file, or an image folder."""
    files = [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix.lower() in LOCAL_SUFFIXES[family]
    ]
    if len(files) == 1:
        return files[0]
    if len(files) > 1:
        names = ", ".join(p.name for p in files[:5])
        raise DataError(f"{source} holds several data files ({names})", "point to one of them")
    if family == "image":
        # An archive often wraps the class folders in one top folder: step into it.
        children = [c for c in folder.iterdir() if not c.name.startswith(".")]
        while len(children) == 1 and children[0].is_dir():
            inner = [c for c in children[0].iterdir() if not c.name.startswith(".")]
            if inner and all(c.is_file() for c in inner):
                break
            folder, children = children[0], inner
        return folder
    accepted = ", ".join(LOCAL_SUFFIXES[family] + ARCHIVE_SUFFIXES)
    raise DataError(f"{source} holds no {family} data file", f"expected one of {accepted}")


def _load_npz(path: Path, kind: str, source: str) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in ("x", "y") if key not in archive.files]
            if missing:
                raise DataError(
                    f"{path.name} has no {' or '.join(missing)} array",
                    "save it with numpy.savez(path, x=images, y=labels)",
                )
            x, y = archive["x"], archive["y"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path.name}: {exc}", "is it a numpy .npz file?") from None
    if x.ndim not in (3, 4):
        raise DataError(
            f"x in {path.name} has shape {x.shape}", "images need (n, height, width[, channels])"
        )
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{path.name}: {x.shape[0]} images but {y.shape[0]} labels")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"x in {path.name} is not numeric ({x.dtype})")
    return Dataset(x.astype("float32"), _targets(y.reshape(len(y), -1)[:, 0], kind, source), source)


def _load_image_folder(folder: Path, kind: str, source: str) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    images: list[np.ndarray[Any, Any]] = []
    labels: list[str] = []
    mode: str | None = None
    sixteen_bit = 0
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as image:
                    image.load()
                    # All images take the first one's colour mode (grayscale stays 1 channel).
                    mode = mode or ("L" if is_grayscale(image.mode) else "RGB")
                    array = image_pixels(image, mode).astype("float32")
                    sixteen_bit += image.mode.startswith("I")
            except (OSError, UnidentifiedImageError, ValueError) as exc:
                raise DataError(
                    f"cannot read image {class_dir.name}/{file.name}: {exc}",
                    "remove or replace the broken file",
                ) from None
            if images and array.shape != images[0].shape:
                raise DataError(
                    f"{class_dir.name}/{file.name} is {array.shape[1]}x{array.shape[0]}, "
                    f"the first image {images[0].shape[1]}x{images[0].shape[0]}",
                    "resize the images to one size",
                )
            images.append(array)
            labels.append(class_dir.name)
    if not images:
        raise DataError(
            f"no .png/.jpg images in {source}", "lay it out as <folder>/<class name>/<image>.png"
        )
    data = Dataset(np.stack(images), _targets(np.array(labels), kind, source), source)
    if sixteen_bit:
        data.notes.append(
            f"{sixteen_bit} of {len(images)} images are 16-bit grayscale: scaled to the 0-255 "
            "range (value / 257), kept as fractions"
        )
    return data


def _read_csv(path: Path, source: str) -> tuple[list[str], list[list[str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {source}: {exc}", "is it a UTF-8 CSV file?") from None
    if not rows:
        raise DataError(f"{source} is empty", "a header row and at least one data row are needed")
    header = [name.strip() for name in rows[0]]
    body = rows[1:]
    if not body:
        raise DataError(f"{source} has a header but no rows", "add data rows")
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(
                f"{source} line {number} has {len(row)} fields, the header {len(header)}",
                "fix the CSV so every row has the header's columns",
            )
    if len(header) < 2:
        raise DataError(f"{source} has one column", "it needs input columns and a target column")
    return header, body


def _target_index(header: Sequence[str], target: str, source: str) -> int:
    if not target:
        return len(header) - 1
    if target not in header:
        raise DataError(
            f"target column {target!r} is not in {source}",
            f"columns: {', '.join(header)}",
        )
    return header.index(target)


def _text_from_table(
    header: list[str], rows: list[list[str]], kind: str, target: str, source: str
) -> Dataset:
    t = _target_index(header, target, source)
    text_index = next(i for i in range(len(header)) if i != t)  # the first non-target column
    x = np.array([row[text_index] for row in rows])
    y = _targets(np.array([row[t].strip() for row in rows]), kind, source)
    return Dataset(x, y, source, header[t], text_column=header[text_index])


def _structured_from_table(
    header: list[str], rows: list[list[str]], kind: str, target: str, source: str
) -> Dataset:
    t = _target_index(header, target, source)
    columns = [name for i, name in enumerate(header) if i != t]
    input_keys(columns)  # two columns one serving input: refused before anything trains
    table = np.array([[cell.strip() for i, cell in enumerate(row) if i != t] for row in rows])
    types = {name: _column_type(table[:, i], name, source) for i, name in enumerate(columns)}
    if all(kind_ == "numerical" for kind_ in types.values()):
        x: np.ndarray[Any, Any] = np.where(table == "", "nan", table).astype("float32")
    else:
        # Mixed tables stay text: AutoKeras encodes the categorical columns and casts the
        # numerical ones itself (CategoricalToNumerical), empty numbers becoming NaN then 0.
        x = np.where((table == "") & _numeric_mask(types, columns), "nan", table)
    y = _targets(np.array([row[t].strip() for row in rows]), kind, source)
    return Dataset(x, y, source, header[t], columns, types)


def _numeric_mask(types: dict[str, str], columns: list[str]) -> np.ndarray[Any, Any]:
    return np.array([types[name] == "numerical" for name in columns])


def _column_type(values: np.ndarray[Any, Any], name: str, source: str) -> str:
    """`numerical` when every cell is a number or missing, else `categorical`. Raises
    DataError for a column of numbers holding an infinite one: it would silently make the
    column categorical (every number a category) and no model can use it as a number."""
    infinite: tuple[int, str] | None = None
    for row, value in enumerate(values, start=1):
        problem = number_problem(str(value))
        if problem is None:
            continue
        if "finite" not in problem:
            return "categorical"
        infinite = infinite or (row, problem)
    if infinite is not None:
        raise DataError(
            f"{source} row {infinite[0]}, column {name!r}: {infinite[1]}",
            "write a finite number, or leave the cell empty for a missing value",
        )
    return "numerical"


def _targets(y: np.ndarray[Any, Any], kind: str, source: str) -> np.ndarray[Any, Any]:
    if kind == "classifier":
        return np.array([str(v.decode() if isinstance(v, bytes) else v) for v in y.tolist()])
    try:
        values = y.astype("float32")
    except ValueError:
        raise DataError(
            f"the target of {source} is not numeric", "regressors need a number per sample"
        ) from None
    if not np.all(np.isfinite(values)):
        raise DataError(f"the target of {source} has missing or infinite values")
    return values


# A classifier target of numbers with more distinct values than this (and than a quarter of the
# rows) is a measurement, not a set of classes: every test row would be a class of its own.
CONTINUOUS_MIN_DISTINCT = 20


def looks_continuous(labels: Sequence[str]) -> bool:
    """Whether classification labels look like a continuous quantity."""
    distinct = set(labels)
    if len(distinct) <= max(CONTINUOUS_MIN_DISTINCT, len(labels) / 4):
        return False
    try:
        values = [float(label) for label in distinct]
    except ValueError:
        return False
    return all(math.isfinite(v) for v in values)


def _check(data: Dataset, family: str, kind: str) -> None:
    if len(data) == 0:
        raise DataError(f"{data.source} has no samples", "point to a dataset with data")
    if kind == "classifier":
        labels = [str(v) for v in data.y.tolist()]
        if looks_continuous(labels):
            raise DataError(
                f"the target {data.target_name!r} of {data.source} looks continuous "
                f"({len(set(labels))} distinct numbers in {len(labels)} rows), not classes",
                f"predict the number with {family}-regressor, or bin it into classes first",
            )
        names = class_names(data)
        if len(names) < 2:
            raise DataError(
                f"the target of {data.source} has a single class ({names[0]!r})",
                "a classifier needs at least two classes; check the target column",
            )
    if data.x.dtype.kind == "f" and data.columns == [] and not np.all(np.isfinite(data.x)):
        raise DataError(f"{data.source} has missing or infinite input values")
