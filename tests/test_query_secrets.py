"""Secrets in a URL's query (presigned S3/GCS URLs, Azure SAS, `?token=`) follow the rules of
tests/test_credentials.py: masked in anything shown, refused by launch when literal, written as
`${NAME}` placeholders (a query value, or the whole dataset) that the worker expands from its own
environment, and never written to disk by the fetch (ClearML's StorageManager would name its cache
file `<md5>.wine.csv?token=...`).

The runtime cases fetch from a loopback server that checks the query; secrets are made at run time
(a literal in this file would be found in ClearML's record of an uncommitted diff).
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import tempfile
import threading
import uuid
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from click.testing import CliRunner

from ak_remote.catalog import JOBS
from ak_remote.clearml_api import client_from_config
from ak_remote.cli import cli
from ak_remote.datasets.references import check_reference, expand_reference
from ak_remote.datasets.secrets import (
    SECRET_PARAMS,
    check_environment,
    expand_placeholders,
    has_masked_credentials,
    mask_credentials,
    placeholder_names,
    redact,
    refuse_credentials,
)
from ak_remote.errors import DataError, UsageError
from ak_remote.launcher import templates
from ak_remote.search.backends import ClearMLBackend
from ak_remote.search.spec import CONTROLLER, SearchSpec
from tests.emulator.server import Emulator
from tests.helpers import JOB, TINY, invoke, launched, read_summary, refused, run_argv, snapshot
from tests.test_credentials import assert_nowhere, completed_run, env_with, wine_csv

QUERY_URL = "https://data.example/wine.csv?v=2&token=${DATA_TOKEN}"
PRESIGNED = (
    "https://bucket.s3.amazonaws.com/wine.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential={cred}&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600"
    "&X-Amz-SignedHeaders=host&X-Amz-Signature={sig}"
)


def fresh() -> str:
    return uuid.uuid4().hex


# -- the rules, pure -------------------------------------------------------------------------


def test_every_secret_query_value_is_masked_and_nothing_else() -> None:
    secret = fresh()
    for name in SECRET_PARAMS:
        for spelled in (name, name.upper(), name.title()):
            text = f"GET https://h/x.csv?a=1&{spelled}={secret}&b=2 failed"
            assert mask_credentials(text) == f"GET https://h/x.csv?a=1&{spelled}=***&b=2 failed"
    # Names are matched whole; placeholders and empty values are no secret.
    kept = f"https://h/x.csv?sigma={secret}&keys=1&token=&auth=${{DATA_AUTH}}"
    assert mask_credentials(kept) == kept
    # As urllib3 says it (path and query only), inside quotes and JSON, and a sweep's commas.
    assert (
        mask_credentials(f"url: /x.csv?Token={secret} (Caused") == "url: /x.csv?Token=*** (Caused"
    )
    assert mask_credentials(f"'https://h/x?sig={secret}'") == "'https://h/x?sig=***'"
    assert mask_credentials(f'{{"d": "h/x?key={secret}\\"q"}}') == '{"d": "h/x?key=***\\"q"}'
    assert mask_credentials(f"dataset=https://h/a?key={secret},https://h/b?key={secret}") == (
        "dataset=https://h/a?key=***,https://h/b?key=***"
    )
    presigned = PRESIGNED.format(cred=f"AKIA{secret}%2F20260101", sig=secret)
    masked = mask_credentials(presigned)
    assert secret not in masked
    assert "X-Amz-Credential=***&X-Amz-Date=20260101T000000Z" in masked
    assert masked.endswith("X-Amz-Signature=***")
    assert has_masked_credentials(masked)
    assert has_masked_credentials("https://***@h/x.csv")
    assert not has_masked_credentials(QUERY_URL)
    assert not has_masked_credentials(presigned)


def test_refusal_of_a_query_secret_names_the_placeholder_forms() -> None:
    secret = fresh()
    cases = {
        f"https://h/x.csv?token={secret}": ("query (token=)", "?token=${DATA_TOKEN}"),
        f"https://h/x.csv?API_KEY={secret}&v=1": ("query (API_KEY=)", "?token=${DATA_TOKEN}"),
        PRESIGNED.format(cred="AKIA", sig=secret): ("signed URL (X-Amz-", "dataset=${DATA_URL}"),
        f"https://acct.blob.core.windows.net/c/x.csv?sv=2022&sr=b&sig={secret}": (
            "signed URL (sig=)",
            "dataset=${DATA_URL}",
        ),
        f"https://h/x.csv?X-Goog-Signature={secret}": ("signed URL", "dataset=${DATA_URL}"),
    }
    for value, (what, example) in cases.items():
        with pytest.raises(UsageError) as caught:
            refuse_credentials("--set", f"dataset={value}")
        text = str(caught.value)
        assert what in text, text
        assert example in text, text
        assert "Datasets behind a password" in text
        assert secret not in text
    for fine in (QUERY_URL, "${DATA_URL}", "https://h/x.csv?v=2&sigma=1", "https://h/x?token="):
        refuse_credentials("--set", f"dataset={fine}")
    spec = SearchSpec(role=CONTROLLER)
    with pytest.raises(UsageError, match="query"):
        ClearMLBackend(None, JOBS[JOB], {"dataset": f"https://h/x.csv?token={secret}"}, spec, "f")
    ClearMLBackend(None, JOBS[JOB], {"dataset": QUERY_URL}, spec, "f")


def test_query_and_whole_value_placeholders_expand_from_the_environment() -> None:
    env = {"DATA_TOKEN": "a&b=c#d/e+f", "U": "reader"}
    url, secrets = expand_placeholders(QUERY_URL, env)
    assert url == "https://data.example/wine.csv?v=2&token=a%26b%3Dc%23d%2Fe%2Bf"
    assert parse_qs(urlsplit(url).query)["token"] == ["a&b=c#d/e+f"]
    assert set(secrets) == {"a&b=c#d/e+f", "a%26b%3Dc%23d%2Fe%2Bf"}
    both = "https://${U}:${DATA_TOKEN}@h/x.csv?sig=${DATA_TOKEN}#top"
    url, _ = expand_placeholders(both, env)
    assert url == "https://reader:a%26b%3Dc%23d%2Fe%2Bf@h/x.csv?sig=a%26b%3Dc%23d%2Fe%2Bf#top"
    assert placeholder_names(both) == ["U", "DATA_TOKEN"]
    assert placeholder_names("${DATA_URL}") == ["DATA_URL"]

    signed = PRESIGNED.format(cred="AKIAEXAMPLE%2F20260101", sig=fresh())
    url, secrets = expand_placeholders(" ${DATA_URL} ", {"DATA_URL": f" {signed} "})
    assert url == signed  # as it is: a whole URL, not encoded
    said = f"GET {urlsplit(signed).path}?{urlsplit(signed).query} failed; tried {signed}"
    assert redact(said, secrets) == "GET /wine.csv?*** failed; tried ***"
    with pytest.raises(UsageError) as caught:
        check_environment("${DATA_URL}", {})
    assert "'${DATA_URL}' names ${DATA_URL}, which is not set" in caught.value.message


def test_placeholders_stand_only_where_the_rules_say() -> None:
    for fine in (QUERY_URL, "${DATA_URL}", "https://h/x.csv?token=${A}${B}&v=1"):
        ref = check_reference(fine, "structured", "classifier")
        assert (ref.kind, ref.value, ref.source) == ("remote", fine, fine)
    for bad, expected in {
        "https://h/${FILE}.csv": "outside its user:password part and query values",
        "https://h/x.csv?token=t${DATA_TOKEN}": "outside",
        "https://h/x.csv?${NAME}=1": "outside",
        "https://h/x.csv#${FRAGMENT}": "outside",
        "https://h/x.csv?token=${data_token}": "malformed",
        "${DATA_URL}/wine.csv": "is not a URL",
        "${data_url}": "is not a URL",
    }.items():
        with pytest.raises(UsageError) as caught:
            check_reference(bad, "structured", "classifier")
        assert expected in caught.value.message, caught.value.message
        assert "dataset=${DATA_URL}" in str(caught.value.hint)


def test_a_whole_value_placeholder_must_hold_a_url_the_job_reads() -> None:
    secret = fresh()
    for value, expected in {
        f"wine{secret}": "does not hold a URL",
        f"https://h/x.png?sig={secret}": "structured jobs cannot read .png files",
        f"s3://AKID:{secret}@bucket/x.csv": "bucket URL with credentials",
        "https://h/x.csv?sig=${SIG}": "not expanded again",
    }.items():
        with pytest.raises(UsageError) as caught:
            expand_reference("${DATA_URL}", "structured", "classifier", {"DATA_URL": value})
        assert expected in caught.value.message
        assert caught.value.message.startswith("dataset ${DATA_URL}")
        assert secret not in str(caught.value)
    signed = PRESIGNED.format(cred="AKIA", sig=secret)
    url, _ = expand_reference("${DATA_URL}", "structured", "classifier", {"DATA_URL": signed})
    assert url == signed


# -- launch and reproduce against the emulator ----------------------------------------------


def test_launch_refuses_query_secrets_and_creates_nothing(synced_server: Emulator) -> None:
    secret = fresh()
    signed = PRESIGNED.format(cred=f"AKIA{secret}", sig=secret)
    cases = {
        ("--set", f"dataset=https://h.example/w.csv?token={secret}"): "query (token=)",
        ("--set", f"dataset={signed}"): "signed URL (X-Amz-Credential=)",
        ("--set", f"dataset=https://a.blob.core.windows.net/c/w.csv?sv=1&sig={secret}"): "sig=",
        ("--sweep", f"dataset=wine,https://h.example/w.csv?access_token={secret}"): "--sweep",
        ("--name", f"from https://h.example/w.csv?Api_Key={secret}"): "--name",
    }
    for (option, value), expected in cases.items():
        line = refused(synced_server, "-q", "cpu", option, value)
        assert expected in line, line
        assert secret not in line
        assert "=***" in line
    line = refused(synced_server, "-q", "cpu", "--dry-run", "--set", f"dataset={signed}")
    assert "dataset=${DATA_URL}" in line
    assert secret not in line
    line = refused(synced_server, "-q", "cpu", "--parallel", "2", "--set", f"dataset={signed}")
    assert "signed URL" in line
    assert not launched(synced_server)


def test_query_and_whole_url_placeholders_are_stored_verbatim(
    synced_server: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATA_TOKEN", raising=False)  # the agent expands them, not this side
    monkeypatch.delenv("DATA_URL", raising=False)
    for dataset, names in ((QUERY_URL, "${DATA_TOKEN}"), ("${DATA_URL}", "${DATA_URL}")):
        result = CliRunner().invoke(
            cli, ["launch", JOB, "-q", "cpu", "--set", f"dataset={dataset}"]
        )
        assert result.exit_code == 0, result.output
        assert f"expands {names} from its environment" in result.stderr
    stored = sorted(
        t["hyperparams"]["General"]["dataset"]["value"] for t in launched(synced_server)
    )
    assert stored == sorted([QUERY_URL, "${DATA_URL}"])


def test_reproduce_refuses_a_run_recorded_with_a_masked_or_literal_query_secret(
    synced_server: Emulator,
) -> None:
    secret = fresh()
    literal = completed_run(synced_server, f"https://h.example/w.csv?token={secret}")
    masked = completed_run(synced_server, "https://h.example/w.csv?token=***")
    for task_id, expected in ((literal, "query (token=)"), (masked, "without the URL's")):
        before = snapshot(synced_server)
        result = invoke("reproduce", task_id, "-q", "cpu")
        assert result.exit_code == 2, result.output
        (line,) = [x for x in result.output.splitlines() if x.startswith("Error:")]
        assert expected in line
        assert "?token=${DATA_TOKEN}" in line
        assert secret not in result.output
        assert snapshot(synced_server) == before


# -- the worker, against a loopback server that checks the query ----------------------------


class QueryServer:
    """Serves `body` at any path to requests whose query has every `required` value (as
    decoded), 403 otherwise; records nothing of the request."""

    def __init__(self, body: bytes, required: dict[str, str]) -> None:
        self.granted = 0
        self.denied = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                if any(query.get(k) != [v] for k, v in required.items()):
                    owner.denied += 1
                    self.send_response(403)
                    self.end_headers()
                    return
                owner.granted += 1
                self.send_response(200)
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


@pytest.fixture
def token() -> str:
    # '&', '=', '+' and '/' in the token: the worker must percent-encode it into the query.
    return f"t&{fresh()}=+/x"


def core(token: str) -> str:
    """The random part of a token: what must be found nowhere."""
    return token.split("&", 1)[1].split("=", 1)[0]


@pytest.fixture
def token_server(token: str) -> Iterator[QueryServer]:
    served = QueryServer(wine_csv(), {"token": token})
    yield served
    served.close()


def test_loading_expands_query_and_whole_url_placeholders_without_a_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str, token_server: QueryServer
) -> None:
    """In process, no training: the worker's loader, with HOME (conftest) and the temporary
    folder inside this test's folder, so that ClearML's storage cache is searched too."""
    from ak_remote.runtime import data as data_module

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("DATA_TOKEN", token)
    url = f"http://127.0.0.1:{token_server.port}/wine.csv?v=2&token=${{DATA_TOKEN}}"
    loaded = data_module.load(url, "structured", "classifier")
    assert (len(loaded), loaded.target_name, loaded.source) == (178, "cultivar", url)
    assert token_server.granted == 1

    # A presigned-style URL, whole, from the environment; zipped, so it is unpacked too.
    sig, cred = fresh(), f"AKIA{fresh()}"
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("wine/wine.csv", wine_csv())
    signed_server = QueryServer(
        packed.getvalue(), {"X-Amz-Signature": sig, "X-Amz-Credential": cred}
    )
    try:
        signed = PRESIGNED.format(cred=cred, sig=sig).replace(
            "https://bucket.s3.amazonaws.com/wine.csv",
            f"http://127.0.0.1:{signed_server.port}/wine.zip",
        )
        monkeypatch.setenv("DATA_URL", signed)
        loaded = data_module.load("${DATA_URL}", "structured", "classifier")
        assert (len(loaded), loaded.source) == (178, "${DATA_URL}")
        assert signed_server.granted == 1
        monkeypatch.setenv("DATA_URL", signed.replace(sig, "0" + sig[1:]))
        with pytest.raises(DataError) as caught:
            data_module.load("${DATA_URL}", "structured", "classifier")
        assert caught.value.message == "could not fetch ${DATA_URL}: HTTP 403 Forbidden"
        assert "${DATA_URL}" in str(caught.value.hint)
    finally:
        signed_server.close()
    assert not list(scratch.iterdir())  # the downloads are gone once loaded
    for needle in (core(token), sig, cred, sig[1:]):
        assert_nowhere(tmp_path, needle)


def test_a_failed_fetch_says_nothing_of_a_placeholder_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    """Connection refused: requests' message quotes the path and query; the expanded value of a
    parameter that no rule knows as secret (`code=`) is redacted all the same."""
    from ak_remote.runtime import data as data_module

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("FUNC_KEY", token)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    url = f"http://127.0.0.1:{port}/wine.csv?code=${{FUNC_KEY}}"
    with pytest.raises(DataError) as caught:
        data_module.load(url, "structured", "classifier")
    text = str(caught.value)
    assert text.startswith(f"could not fetch {url}: ConnectionError"), text
    assert "?code=***" in text
    assert core(token) not in text


@pytest.mark.parametrize("form", ["placeholder", "literal"])
def test_a_local_run_fetches_with_a_query_token_and_records_no_secret(
    tmp_path: Path, token_server: QueryServer, token: str, form: str
) -> None:
    """`ak-remote run --offline`, 1 trial of 1 epoch: with `?token=${DATA_TOKEN}` (as an agent
    would run it), and with the token written out (allowed on this machine, masked in records)."""
    home, run_dir = tmp_path / "home", tmp_path / "run"
    home.mkdir(exist_ok=True)
    base = f"http://127.0.0.1:{token_server.port}/wine.csv?token="
    if form == "placeholder":
        url, env, recorded = base + "${DATA_TOKEN}", {"DATA_TOKEN": token}, base + "${DATA_TOKEN}"
    else:
        url, env, recorded = base + quote(token, safe=""), {}, base + "***"
    args = ["--run-dir", str(run_dir), "--set", f"dataset={url}", "--set", "max_trials=1"]
    for item in [*TINY, "batch_size=16", "histogram_freq=0"]:
        args += ["--set", item]
    result = subprocess.run(
        run_argv(*args),
        cwd=tmp_path,
        env=env_with(home, **env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert token_server.granted >= 1
    assert token_server.denied == 0
    record = read_summary(run_dir)
    assert record["status"] == "completed"
    assert record["metrics"]["test_accuracy"] >= 0.0
    assert (run_dir / "models" / "model.keras").is_file()
    assert record["params"]["dataset"] == recorded  # never the token itself
    assert record["data"]["source"] == recorded
    session = Path(record["offline_session"])
    assert session.is_file()
    assert session.is_relative_to(home)
    # The run folder, the offline session (folder and zip) and ~/.clearml: nowhere.
    read = assert_nowhere(tmp_path, core(token), result.stdout, result.stderr)
    assert read > 20  # models, event files, logs and the session were all read


@pytest.mark.slow
def test_an_agent_fetches_a_signed_url_from_its_environment(
    clearml_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """launch `dataset=${DATA_URL}` (no variable on this side) -> the real clearml-agent, whose
    environment holds a presigned-style URL -> the job fetches it; the server's record and
    everything under this test's folders hold neither signature nor credential."""
    from tests.emulator.agent import running_agent

    emulator = clearml_emulator
    sig, cred = fresh(), f"AKIA{fresh()}"
    signed_server = QueryServer(wine_csv(), {"X-Amz-Signature": sig, "X-Amz-Credential": cred})
    signed = PRESIGNED.format(cred=cred, sig=sig).replace(
        "https://bucket.s3.amazonaws.com", f"http://127.0.0.1:{signed_server.port}"
    )
    monkeypatch.setenv("AK_REMOTE_POLL_INTERVAL", "1")
    monkeypatch.delenv("DATA_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    templates.sync(client_from_config(), "ak-remote/templates", "reg/w:1", "")
    emulator.create_queue("cpu")
    sets = ["--set", "dataset=${DATA_URL}", "--set", "max_trials=1"]
    for item in [*TINY, "batch_size=16", "histogram_freq=0"]:
        sets += ["--set", item]
    try:
        with running_agent(
            emulator, "cpu", env={"DATA_URL": signed}, log_dir=tmp_path / "agent"
        ) as agent:
            result = invoke("launch", JOB, "-q", "cpu", *sets, "--wait")
            assert result.exit_code == 0, f"{result.output}\n--- agent\n{agent.log()[-6000:]}"
            agent_log = agent.log()
    finally:
        signed_server.close()
    task = emulator.get_task(result.stdout.split()[0])
    assert task["status"] == "completed"
    assert task["hyperparams"]["General"]["dataset"]["value"] == "${DATA_URL}"
    assert signed_server.granted >= 1
    with emulator.state.lock:
        recorded = json.dumps(
            {
                "tasks": emulator.state.tasks,
                "events": emulator.state.events,
                "models": emulator.state.models,
            },
            default=str,
        )
        files = list(emulator.state.files.values())
    assert "test metrics" in recorded  # the job's console output reached the server
    for needle in (sig, cred):
        assert needle not in recorded
        for blob in files:
            assert needle.encode() not in blob
            if blob[:2] == b"PK":
                with zipfile.ZipFile(io.BytesIO(blob)) as archive:
                    for name in archive.namelist():
                        assert needle.encode() not in archive.read(name), name
        assert_nowhere(tmp_path, needle, result.output, agent_log)
