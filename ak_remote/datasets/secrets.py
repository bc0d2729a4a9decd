"""Credentials in dataset URLs: masked in what is shown, refused in parameters, expanded late.

Credentials never travel in a parameter: an http(s) URL names environment variables instead
(NAME: `[A-Z_][A-Z0-9_]*`), in three places only: its user:password part
(`https://${DATA_USER}:${DATA_TOKEN}@host/data.csv`), the whole value of a query parameter
(`https://host/data.csv?token=${DATA_TOKEN}`), or the whole reference (`${DATA_URL}`, e.g. a
presigned URL kept in the worker's environment). The worker expands them just before it fetches
(`expand_placeholders`). Query parameters that usually carry a secret (`SECRET_PARAMS`) are
masked in anything shown and refused when they hold a literal value. Bucket URLs take no
credentials at all: the SDK reads them from clearml.conf. Pure Python.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping, Sequence
from urllib.parse import quote, unquote

from ak_remote.errors import UsageError

BUCKET_SCHEMES = ("s3", "gs", "azure")  # StorageManager takes their keys from clearml.conf
# A URL's user:password@ part: greedy up to the authority's last '@' (a password may hold '@').
URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]+)@")
PLACEHOLDER = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)\}")
PLACEHOLDERS_ONLY = re.compile(r"(?:\$\{[A-Z_][A-Z0-9_]*\})+")
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
_TRAILING = ":.)]"  # a message's punctuation after a URL, not part of a query value
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
    return bool(value) and not PLACEHOLDERS_ONLY.fullmatch(value)


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
        # A message may put punctuation right after a URL (`fetch URL: HTTP 403`); the value
        # match takes it along. It is kept, and `${NAME}:` is still a name.
        value = match.group("value")
        core = value.rstrip(_TRAILING)
        if _literal_value(core):
            return f"{match.group('lead')}***{value[len(core) :]}"
        return match.group(0)

    return _SECRET_QUERY.sub(mask_query, URL_CREDENTIALS.sub(mask, text))


def has_masked_credentials(text: str) -> bool:
    """Whether `text` holds a URL whose secret was masked (`***@`, `?token=***`) when recorded."""
    return "://***@" in text or any(
        m.group("value").rstrip(_TRAILING) == "***" for m in _SECRET_QUERY.finditer(text)
    )


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
    for match in URL_CREDENTIALS.finditer(value):
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
    match = URL_CREDENTIALS.match(ref)
    rest = ref[match.end() :] if match else ref
    return rest.partition("#")[0].partition("?")[2]


def placeholder_names(reference: str) -> list[str]:
    """The ${NAME} placeholders `reference` expands (the whole value, or a URL's user:password
    part and query values), in order, each once."""
    ref = reference.strip()
    whole = PLACEHOLDER.fullmatch(ref)
    if whole is not None:
        return [whole.group("name")]
    match = URL_CREDENTIALS.match(ref)
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
    match = URL_CREDENTIALS.match(url)
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
    match = URL_CREDENTIALS.match(ref)
    if match is not None:
        userinfo = PLACEHOLDER.sub(substitute, match.group("userinfo"))
        head, rest = f"{match.group('scheme')}{userinfo}@", ref[match.end() :]
    body, hashmark, fragment = rest.partition("#")
    path, mark, query = body.partition("?")
    return f"{head}{path}{mark}{PLACEHOLDER.sub(substitute, query)}{hashmark}{fragment}", used


# A job process started on this machine gets the --set values that hold literal credentials in
# this variable (JSON, name: value), never in its argv: any user of the machine reads another's
# argv (`ps`), only its owner (and root) its environment.
SECRET_SETS_ENV = "AK_REMOTE_SECRET_SETS"


def job_set_arguments(values: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """`--set KEY=VALUE` arguments for a job process and the environment to add to it: values
    holding literal credentials go by SECRET_SETS_ENV instead of the command line."""
    import json

    argv: list[str] = []
    secret: dict[str, str] = {}
    for key, value in values.items():
        if mask_credentials(value) != value:
            secret[key] = value
        else:
            argv += ["--set", f"{key}={value}"]
    return argv, ({SECRET_SETS_ENV: json.dumps(secret)} if secret else {})


def secret_set_assignments(environ: MutableMapping[str, str]) -> list[str]:
    """The `KEY=VALUE` assignments a parent passed in SECRET_SETS_ENV, taken out of `environ`
    (what this process starts does not inherit them). Raises UsageError when unreadable."""
    import json

    raw = environ.pop(SECRET_SETS_ENV, None)
    if not raw:
        return []
    try:
        values = json.loads(raw)
        if not isinstance(values, dict):
            raise ValueError
    except ValueError:
        raise UsageError(
            f"{SECRET_SETS_ENV} is not a JSON object of parameter values",
            "it is set by ak-remote for the jobs it starts; unset it",
        ) from None
    return [f"{key}={value}" for key, value in values.items()]
