"""The ways a secret travels with a dataset URL, and one loopback data server that checks each.

A dataset behind a password reaches a worker in one of three forms (README, "Datasets behind a
password"): basic auth in the URL (`https://${DATA_USER}:${DATA_TOKEN}@host/...`), a secret query
parameter (`?token=${DATA_TOKEN}`), or a presigned-style signed URL given whole
(`dataset=${DATA_URL}`). `FORMS` describes each: how a literal secret looks (refused by launch),
how it is masked, which placeholders stand for it, and how the worker's environment holds it.
The credentials suite (tests/unit/test_credentials.py, tests/integration/test_credentials.py) runs
its checks over every form.

Secrets are made at run time: a literal in a test file would be found in ClearML's record of an
uncommitted diff.
"""

from __future__ import annotations

import base64
import csv
import functools
import io
import threading
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

PRESIGNED = (
    "https://bucket.s3.amazonaws.com/wine.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential={cred}&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600"
    "&X-Amz-SignedHeaders=host&X-Amz-Signature={sig}"
)


def fresh() -> str:
    return uuid.uuid4().hex


@functools.cache
def wine_csv() -> bytes:
    """scikit-learn's wine table as a CSV, the target `cultivar` last (178 rows)."""
    from sklearn.datasets import load_wine

    data = load_wine()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*data.feature_names, "cultivar"])
    for row, target in zip(data.data, data.target, strict=True):
        writer.writerow([f"{v:g}" for v in row] + [f"c{target}"])
    return out.getvalue().encode()


@functools.cache
def wine_zip() -> bytes:
    """The same table packed as wine/wine.csv in a zip archive."""
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("wine/wine.csv", wine_csv())
    return packed.getvalue()


# --- the forms ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Secret:
    """One test's secret: `value` is what the worker's environment holds (the signed form: the
    signature, with `credential` beside it); `needles`, its random parts, are found nowhere."""

    value: str
    needles: tuple[str, ...]
    credential: str = ""


@dataclass(frozen=True)
class Key:
    """What the data server asks of a request: basic auth `user:password` and query values."""

    user_password: tuple[str, str] | None = None
    query: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Form:
    """One way a secret travels. Texts with `{secret}` are formatted with a literal secret."""

    id: str
    # What launch's one refusal line names, the mask it shows instead of the secret, and the
    # placeholder form it offers (reproduce offers the same).
    refusal: str
    mask: str
    hint: str
    # (option, value, what the refusal names) for `ak-remote launch`, each refused.
    launch_cases: tuple[tuple[str, str, str], ...]
    # A literal secret in a URL, and the same URL as a run recorded it masked.
    literal: str
    masked: str
    # A reference an agent expands (a remote host, never fetched here), a second one for a
    # sweep, and the variables launch says the agent expands, as it names them.
    placeholder: str
    other_placeholder: str
    variables: str
    # The variable whose absence a worker reports, and how a refused fetch answers.
    last_variable: str
    denied: str

    def new_secret(self) -> Secret:
        token = fresh()
        if self.id == "userinfo":
            return Secret(f"tok@{token}/x", (token,))  # '@', '/': percent-encoded into the URL
        if self.id == "query":
            return Secret(f"t&{token}=+/x", (token,))  # '&', '=', '+', '/': encoded into the query
        credential = f"AKIA{fresh()}"
        # The signature's tail is a needle: it is in a wrong signature too (see `wrong`).
        return Secret(token, (token[1:], credential), credential)

    def wrong(self, secret: Secret) -> Secret:
        """A secret the data server refuses."""
        if self.id == "signed":  # one character off (never the same: 0 or, after a 0, 1)
            first = "1" if secret.value.startswith("0") else "0"
            return Secret(first + secret.value[1:], secret.needles, secret.credential)
        token = f"wrong{fresh()}"
        return Secret(token, (token,))

    def key(self, secret: Secret) -> Key:
        if self.id == "userinfo":
            return Key(user_password=("reader", secret.value))
        if self.id == "query":
            return Key(query={"token": secret.value})
        return Key(query={"X-Amz-Signature": secret.value, "X-Amz-Credential": secret.credential})

    def reference(self, port: int, path: str = "/wine.csv") -> str:
        """The dataset reference, placeholders unexpanded, of `path` on the loopback server."""
        if self.id == "userinfo":
            return f"http://${{DATA_USER}}:${{DATA_TOKEN}}@127.0.0.1:{port}{path}"
        if self.id == "query":
            return f"http://127.0.0.1:{port}{path}?v=2&token=${{DATA_TOKEN}}"
        return "${DATA_URL}"

    def env(self, secret: Secret, port: int, path: str = "/wine.csv") -> dict[str, str]:
        """The variables a worker needs to fetch `reference(port, path)`."""
        if self.id == "userinfo":
            return {"DATA_USER": "reader", "DATA_TOKEN": secret.value}
        if self.id == "query":
            return {"DATA_TOKEN": secret.value}
        signed = PRESIGNED.format(cred=secret.credential, sig=secret.value)
        local = signed.replace(
            "https://bucket.s3.amazonaws.com/wine.csv", f"http://127.0.0.1:{port}{path}"
        )
        return {"DATA_URL": local}

    def missing(self, secret: Secret, port: int) -> dict[str, str]:
        """The worker's variables without `last_variable`."""
        env = self.env(secret, port)
        env.pop(self.last_variable)
        return env

    @property
    def variable_names(self) -> tuple[str, ...]:
        return ("DATA_USER", "DATA_TOKEN") if self.id == "userinfo" else (self.last_variable,)


PLACEHOLDER_URL = "https://${DATA_USER}:${DATA_TOKEN}@data.example/wine.csv"
QUERY_URL = "https://data.example/wine.csv?v=2&token=${DATA_TOKEN}"

USERINFO = Form(
    id="userinfo",
    refusal="carries credentials",
    mask="***@",
    hint="${DATA_TOKEN}",
    launch_cases=(
        ("--set", "dataset=https://alice:{secret}@data.example/wine.csv", "carries credentials"),
        ("--set", "dataset=https://{secret}@data.example/wine.csv", "carries credentials"),
        ("--set", "dataset=s3://AKID:{secret}@bucket/wine.csv", "sdk.aws.s3.credentials"),
        ("--sweep", "dataset=wine,https://alice:{secret}@h.example/w.csv", "--sweep"),
        ("--name", "from https://alice:{secret}@h.example", "--name"),
    ),
    literal="https://alice:{secret}@h.example/w.csv",
    masked="https://***@h.example/w.csv",
    placeholder=PLACEHOLDER_URL,
    other_placeholder=PLACEHOLDER_URL.replace("wine.csv", "wine2.csv"),
    variables="${DATA_USER}, ${DATA_TOKEN}",
    last_variable="DATA_TOKEN",
    denied="HTTP 401 Unauthorized",
)
QUERY = Form(
    id="query",
    refusal="query (token=)",
    mask="=***",
    hint="?token=${DATA_TOKEN}",
    launch_cases=(
        ("--set", "dataset=https://h.example/w.csv?token={secret}", "query (token=)"),
        ("--sweep", "dataset=wine,https://h.example/w.csv?access_token={secret}", "--sweep"),
        ("--name", "from https://h.example/w.csv?Api_Key={secret}", "--name"),
    ),
    literal="https://h.example/w.csv?token={secret}",
    masked="https://h.example/w.csv?token=***",
    placeholder=QUERY_URL,
    other_placeholder=QUERY_URL.replace("wine.csv", "wine2.csv"),
    variables="${DATA_TOKEN}",
    last_variable="DATA_TOKEN",
    denied="HTTP 403 Forbidden",
)
SIGNED = Form(
    id="signed",
    refusal="signed URL",
    mask="=***",
    hint="dataset=${DATA_URL}",
    launch_cases=(
        (
            "--set",
            "dataset=" + PRESIGNED.format(cred="AKIA{secret}", sig="{secret}"),
            "signed URL (X-Amz-Credential=)",
        ),
        ("--set", "dataset=https://a.blob.core.windows.net/c/w.csv?sv=1&sig={secret}", "sig="),
    ),
    literal=PRESIGNED.format(cred="AKIA{secret}", sig="{secret}"),
    masked=PRESIGNED.format(cred="***", sig="***"),
    placeholder="${DATA_URL}",
    other_placeholder="${DATA_URL_2}",
    variables="${DATA_URL}",
    last_variable="DATA_URL",
    denied="HTTP 403 Forbidden",
)
FORMS = (USERINFO, QUERY, SIGNED)
# A test over every form; with the `secret` and `data_server` fixtures (tests/conftest.py).
every_form = pytest.mark.parametrize("form", FORMS, ids=[f.id for f in FORMS])


# --- the loopback data server ---------------------------------------------------------------


class DataServer:
    """Wine on 127.0.0.1 (a path ending in .zip: the zip archive, any other: the CSV) to a request
    that shows the key: the basic-auth header (401 otherwise) and every query value, as decoded
    (403 otherwise). Counts what it granted and denied; records nothing of a request."""

    def __init__(self, key: Key) -> None:
        self.granted = 0
        self.denied = 0
        owner = self
        basic = None
        if key.user_password is not None:
            pair = ":".join(key.user_password).encode()
            basic = "Basic " + base64.b64encode(pair).decode()
        required = dict(key.query or {})

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if basic is not None and self.headers.get("Authorization") != basic:
                    owner.denied += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="data"')
                    self.end_headers()
                    return
                split = urlsplit(self.path)
                query = parse_qs(split.query)
                if any(query.get(k) != [v] for k, v in required.items()):
                    owner.denied += 1
                    self.send_response(403)
                    self.end_headers()
                    return
                owner.granted += 1
                zipped = split.path.endswith(".zip")
                body = wine_zip() if zipped else wine_csv()
                self.send_response(200)
                self.send_header("Content-Type", "application/zip" if zipped else "text/csv")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- where a secret must not be --------------------------------------------------------------


def assert_nowhere(root: Path, needle: str, *outputs: str) -> int:
    """`needle` is in no file name or content under `root` (zip members read too), nor in any
    of `outputs`; returns how many files were read."""
    key = needle.encode()
    read = 0
    for text in outputs:
        assert needle not in text
    for path in root.rglob("*"):
        assert needle not in str(path), path
        if not path.is_file() or path.is_symlink():
            continue
        blob = path.read_bytes()
        read += 1
        assert_not_in_blob(key, blob, str(path))
    return read


def assert_not_in_blob(key: bytes, blob: bytes, where: str) -> None:
    """`key` is not in `blob`, nor in any member if `blob` is a zip archive."""
    assert key not in blob, where
    if blob[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            for name in archive.namelist():
                assert key not in archive.read(name), f"{where}!{name}"
