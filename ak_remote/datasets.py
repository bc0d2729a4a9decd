"""Dataset references: what `dataset=` may name, checked cheaply before anything is created.

Pure Python on purpose (no numpy, no TensorFlow, no ClearML at import): the launcher calls
`check_reference` to reject a bad dataset before it creates a task, and the job runtime calls it
again before it loads anything. Loading the data itself lives in `ak_remote.runtime.data`.

Accepted forms:
- a bundled name (scikit-learn's sets that ship in its wheel, plus `reviews`, a small synthetic
  text set this module generates deterministically), per job family and kind;
- a local path: a CSV file for structured and text jobs; an image folder (`root/<class>/*.png`)
  or an `.npz` file with `x` and `y` arrays for image jobs;
- a URL or bucket path that ClearML's StorageManager fetches (http, https, s3, gs, azure);
- `clearml://<dataset id>`: a ClearML Dataset, fetched with `Dataset.get(...).get_local_copy()`.

Credentials never travel in a parameter: an http(s) URL names environment variables instead
(NAME: `[A-Z_][A-Z0-9_]*`), in three places only: its user:password part
(`https://${DATA_USER}:${DATA_TOKEN}@host/data.csv`), the whole value of a query parameter
(`https://host/data.csv?token=${DATA_TOKEN}`), or the whole reference (`${DATA_URL}`, e.g. a
presigned URL kept in the worker's environment). The worker expands them just before it fetches
(`expand_reference`). Query parameters that usually carry a secret (`SECRET_PARAMS`) are masked
in anything shown and refused when they hold a literal value. Bucket URLs take no credentials at
all: the SDK reads them from clearml.conf.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlparse, urlsplit, urlunsplit

from ak_remote.contract import is_task_id
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
BUCKET_SCHEMES = ("s3", "gs", "azure")  # StorageManager takes their keys from clearml.conf
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


# A URL's user:password@ part: greedy up to the authority's last '@' (a password may hold '@').
_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]+)@")
PLACEHOLDER = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)\}")
_PLACEHOLDERS_ONLY = re.compile(r"(?:\$\{[A-Z_][A-Z0-9_]*\})+")
# Query parameters that carry a secret by convention, matched by whole name, any case: presigned
# S3 and GCS URLs, Azure SAS (sig), and the usual token names.
PRESIGNED_PARAMS = (
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
    "sig",
    "signature",
)
SECRET_PARAMS = (
    *PRESIGNED_PARAMS,
    *("token", "access_token", "api_key", "apikey", "key", "password", "secret", "auth"),
)
# A secret query value ends where the parameter does, and also at a quote, a backslash (the
# value sits in a message or JSON text) or a comma (--sweep separates its values with commas).
_SECRET_QUERY = re.compile(
    r"(?P<lead>[?&;](?P<name>" + "|".join(re.escape(n) for n in SECRET_PARAMS) + r")=)"
    r"(?P<value>[^&#;,\s'\"<>\\]*)",
    re.IGNORECASE,
)
PLACEHOLDER_EXAMPLE = "https://${DATA_USER}:${DATA_TOKEN}@host/data.csv"
QUERY_EXAMPLE = "https://host/data.csv?token=${DATA_TOKEN}"
WHOLE_EXAMPLE = "dataset=${DATA_URL}"
PLACEHOLDER_RULE = (
    "write ${NAME} (NAME: capital letters, digits, _) as a URL's user:password part "
    f"({PLACEHOLDER_EXAMPLE}), as a query parameter's whole value ({QUERY_EXAMPLE}), "
    f"or as the whole dataset ({WHOLE_EXAMPLE})"
)
README_POINTER = '(README: Jobs, "Datasets behind a password")'
ENV_HINT = (
    "export it where the job runs: for `ak-remote run`, this shell; for an agent, the agent's "
    "environment, passed into Docker-mode tasks with "
    'agent.extra_docker_arguments: ["-e", "{name}"] in the agent\'s clearml.conf'
)
BUCKET_HINT = (
    "drop them from the URL: agents read bucket credentials from their clearml.conf "
    "(sdk.aws.s3.credentials, sdk.google.storage.credentials, sdk.azure.storage.containers)"
)


def _secret_part(userinfo: str) -> str:
    """The part of `user:password` that is secret: the password, or a lone token."""
    user, colon, password = userinfo.partition(":")
    return password if colon else user


def _literal_secret(userinfo: str) -> bool:
    """Whether `userinfo` holds a secret as text rather than as ${NAME} placeholders."""
    return _literal_value(_secret_part(userinfo))


def _literal_value(value: str) -> bool:
    """Whether `value` is a secret as text: not empty and not made of ${NAME} placeholders."""
    return bool(value) and not _PLACEHOLDERS_ONLY.fullmatch(value)


def mask_credentials(text: str) -> str:
    """`text` with every URL's `user:password@` replaced by `***@` and every secret query value
    (`SECRET_PARAMS`, e.g. `?token=`, `&X-Amz-Signature=`) by `***` (for messages and records).

    A secret made of ${NAME} placeholders is kept: it is a name, not a secret.
    """

    def mask(match: re.Match[str]) -> str:
        if _literal_secret(match.group("userinfo")):
            return f"{match.group('scheme')}***@"
        return match.group(0)

    def mask_query(match: re.Match[str]) -> str:
        if _literal_value(match.group("value")):
            return f"{match.group('lead')}***"
        return match.group(0)

    return _SECRET_QUERY.sub(mask_query, _CREDENTIALS.sub(mask, text))


def has_masked_credentials(text: str) -> bool:
    """Whether `text` holds a URL whose secret was masked (`***@`, `?token=***`) when recorded."""
    return "://***@" in text or any(m.group("value") == "***" for m in _SECRET_QUERY.finditer(text))


MIN_REDACTED = 4  # shorter values (a user name "ml") would mangle every message, not hide a secret


def redact(text: str, secrets: Sequence[str]) -> str:
    """`text` with each of `secrets` (values expanded from the environment) replaced by ***."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_REDACTED:
            text = text.replace(secret, "***")
    return mask_credentials(text)


def refuse_credentials(what: str, value: str) -> None:
    """Raise UsageError when `value` carries credentials in a URL (before it reaches a server):
    a literal user:password part, or a literal value of a secret query parameter.

    `what` names where the value came from (`--set`, "the template's dataset"...); the message
    shows the value masked, never the secret.
    """
    shown = mask_credentials(value)
    for match in _CREDENTIALS.finditer(value):
        scheme = match.group("scheme")[:-3].lower()
        if scheme in BUCKET_SCHEMES:
            raise UsageError(f"{what} {shown!r} has credentials in a bucket URL", BUCKET_HINT)
        if _literal_secret(match.group("userinfo")):
            raise UsageError(
                f"{what} {shown!r} carries credentials in its URL, which would be stored in the "
                "run's ClearML parameters",
                f"name environment variables instead, as in {PLACEHOLDER_EXAMPLE}, and set them "
                f"in the agent's environment {README_POINTER}",
            )
    for found in _SECRET_QUERY.finditer(value):
        if not _literal_value(found.group("value")):
            continue
        name = found.group("name")
        if name.lower() in PRESIGNED_PARAMS:
            raise UsageError(
                f"{what} {shown!r} is a signed URL ({name}=), a short-lived credential that "
                "would be stored in the run's ClearML parameters",
                f"keep the whole URL in the agent's environment and pass its name, as in "
                f"{WHOLE_EXAMPLE} {README_POINTER}",
            )
        raise UsageError(
            f"{what} {shown!r} carries a secret in its URL's query ({name}=), which would be "
            "stored in the run's ClearML parameters",
            f"name an environment variable instead, as in {QUERY_EXAMPLE}, and set it in the "
            f"agent's environment {README_POINTER}",
        )


def _query_of(ref: str) -> str:
    """The query of URL `ref` (after its first '?', before '#'), '' when it has none."""
    match = _CREDENTIALS.match(ref)
    rest = ref[match.end() :] if match else ref
    return rest.partition("#")[0].partition("?")[2]


def placeholder_names(reference: str) -> list[str]:
    """The ${NAME} placeholders `reference` expands (the whole value, or a URL's user:password
    part and query values), in order, each once."""
    ref = reference.strip()
    whole = PLACEHOLDER.fullmatch(ref)
    if whole is not None:
        return [whole.group("name")]
    match = _CREDENTIALS.match(ref)
    places = [match.group("userinfo") if match else "", _query_of(ref)]
    names = [m.group("name") for place in places for m in PLACEHOLDER.finditer(place)]
    return list(dict.fromkeys(names))


def check_environment(url: str, environ: Mapping[str, str] | None = None) -> None:
    """Raise UsageError naming the first placeholder of `url` unset (or empty) in `environ`."""
    env = os.environ if environ is None else environ
    for name in placeholder_names(url):
        if not env.get(name):
            raise UsageError(
                f"the dataset {mask_credentials(url.strip())!r} names ${{{name}}}, "
                "which is not set in the environment",
                ENV_HINT.replace("{name}", name),
            )


def _secrets_in(url: str) -> list[str]:
    """What to redact when a whole URL came from the environment: the URL, its query, its
    password and its secret query values (as written and decoded); messages quote them apart."""
    found = [url]
    match = _CREDENTIALS.match(url)
    if match is not None:
        found.append(_secret_part(match.group("userinfo")))
    query = _query_of(url)
    found.append(query)
    found += [m.group("value") for m in _SECRET_QUERY.finditer(f"?{query}")]
    found += [unquote(text) for text in found]
    return [text for text in dict.fromkeys(found) if text]


def expand_placeholders(
    url: str, environ: Mapping[str, str] | None = None
) -> tuple[str, list[str]]:
    """`url` with its ${NAME} placeholders replaced from `environ` (default: os.environ), and
    the texts substituted (to redact from anything said about the fetch).

    A whole-value placeholder becomes the variable's text as it is (a full URL); placeholders
    in a URL are percent-encoded, so a token holding '@', ':', '/' or '&' keeps the URL intact.
    Raises UsageError naming an unset variable.
    """
    env = os.environ if environ is None else environ
    check_environment(url, env)
    ref = url.strip()
    whole = PLACEHOLDER.fullmatch(ref)
    if whole is not None:
        value = env[whole.group("name")].strip()
        return value, _secrets_in(value)
    if not placeholder_names(ref):
        return ref, []
    used: list[str] = []

    def substitute(found: re.Match[str]) -> str:
        value = env[found.group("name")]
        encoded = quote(value, safe="")
        used.extend(dict.fromkeys((value, encoded)))
        return encoded

    head, rest = "", ref
    match = _CREDENTIALS.match(ref)
    if match is not None:
        userinfo = PLACEHOLDER.sub(substitute, match.group("userinfo"))
        head, rest = f"{match.group('scheme')}{userinfo}@", ref[match.end() :]
    body, hashmark, fragment = rest.partition("#")
    path, mark, query = body.partition("?")
    return f"{head}{path}{mark}{PLACEHOLDER.sub(substitute, query)}{hashmark}{fragment}", used


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
    match = _CREDENTIALS.match(ref)
    rest = ref[match.end() :] if match else ref
    body, _, fragment = rest.partition("#")
    path, _, query = body.partition("?")
    values = [item.partition("=") for item in re.split("[&;]", query)]
    if "${" in path + fragment or any(
        "${" in name or ("${" in value and not _PLACEHOLDERS_ONLY.fullmatch(value))
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


# --- the bundled text set --------------------------------------------------------------------

_PRODUCTS = (
    "blender", "headphones", "backpack", "kettle", "lamp", "keyboard", "jacket", "tent",
    "camera", "toaster", "umbrella", "chair", "mouse", "speaker", "watch", "bottle",
)  # fmt: skip
_WORDS = {
    1: ("terrible", "broken", "useless", "awful", "a waste of money"),
    2: ("disappointing", "flimsy", "mediocre", "not worth it", "poorly made"),
    3: ("okay", "average", "decent enough", "fine for the price", "nothing special"),
    4: ("good", "solid", "well made", "reliable", "a nice surprise"),
    5: ("excellent", "fantastic", "perfect", "brilliant", "the best I have owned"),
}
_CLOSERS = {
    1: ("I returned it.", "Avoid.", "Never again.", "Stopped working in a week."),
    2: ("I expected more.", "Would not buy again.", "It broke quickly."),
    3: ("It does the job.", "Maybe buy it on sale.", "Some good, some bad."),
    4: ("I would recommend it.", "Happy with it.", "Does what it says."),
    5: ("Buy it!", "Love it.", "Five stars from me.", "Highly recommended."),
}
_FILLERS = ("honestly", "overall", "so far", "after a month", "for daily use", "as a gift")


@dataclass(frozen=True)
class Review:
    """One synthetic review: its text, sentiment label and 1-5 star rating."""

    text: str
    sentiment: str  # negative (1-2 stars), neutral (3) or positive (4-5)
    rating: int


def generate_reviews(count: int = 400, seed: int = 20240601) -> list[Review]:
    """The bundled `reviews` set: `count` short reviews, the same for the same seed."""
    rng = random.Random(seed)
    reviews = []
    for _ in range(count):
        rating = rng.randint(1, 5)
        product = rng.choice(_PRODUCTS)
        first, second = rng.sample(_WORDS[rating], 2)
        text = (
            f"The {product} is {first}, {rng.choice(_FILLERS)} {second}. "
            f"{rng.choice(_CLOSERS[rating])}"
        )
        sentiment = "negative" if rating <= 2 else "neutral" if rating == 3 else "positive"
        reviews.append(Review(text, sentiment, rating))
    return reviews
