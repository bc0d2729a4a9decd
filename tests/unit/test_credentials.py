"""Secrets never reach ClearML: a secret written into a dataset URL is refused before anything is
written to the server, and `${NAME}` placeholders are expanded by the worker, from its own
environment, at the moment it fetches; nothing it writes holds the secret.

The rules are checked as pure functions first. Then every way a secret travels
(tests/secret_forms.py: basic auth `user:password`, a secret query parameter such as `?token=`,
a presigned-style signed URL given whole as `${DATA_URL}`) goes through the same checks: launch,
a template and reproduce against the emulator (the server's state compared before and after
each refusal), and the worker's loader in this process against the loopback data server. Real
processes (`ak-remote run`, the job script, a real clearml-agent): tests/integration/
test_credentials.py. Secrets are made at run time: a literal in this file would be found in
ClearML's record of an uncommitted diff.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from ak_remote.catalog import JOBS
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
from ak_remote.search.backends import ClearMLBackend
from ak_remote.search.spec import CONTROLLER, SearchSpec
from tests.emulator.server import Emulator
from tests.helpers import (
    JOB,
    error_lines,
    free_port,
    invoke,
    launched,
    refused,
    snapshot,
)
from tests.secret_forms import (
    PLACEHOLDER_URL,
    PRESIGNED,
    QUERY,
    QUERY_URL,
    SIGNED,
    USERINFO,
    DataServer,
    Form,
    Secret,
    assert_nowhere,
    every_form,
    fresh,
)

# -- the rules, pure: basic auth ---------------------------------------------------------------


def test_masking_keeps_placeholders_and_hides_every_literal_secret() -> None:
    assert mask_credentials(PLACEHOLDER_URL) == PLACEHOLDER_URL
    assert mask_credentials("https://alice:${TOKEN}@h/x.csv") == "https://alice:${TOKEN}@h/x.csv"
    # A password holding '@' is masked whole (the authority ends at its last '@').
    assert mask_credentials("https://alice:p@ss@h/x.csv") == "https://***@h/x.csv"
    assert mask_credentials("see https://tok3n@h/x.csv and s3://K:S@b/y") == (
        "see https://***@h/x.csv and s3://***@b/y"
    )
    # Lower-case names are not placeholders: the text is a literal secret.
    assert mask_credentials("https://${user}:${token}@h/x.csv") == "https://***@h/x.csv"
    # A query placeholder followed by a message's colon is still a name; a literal one is not.
    line = "could not fetch http://h/x.csv?v=2&token=${DATA_TOKEN}: HTTP 403 Forbidden"
    assert mask_credentials(line) == line
    assert mask_credentials("fetch http://h/x.csv?token=s3cr3t: HTTP 403") == (
        "fetch http://h/x.csv?token=***: HTTP 403"
    )


def test_refusal_names_the_fix_and_never_the_secret() -> None:
    for value in (
        "https://alice:hunter22@h/x.csv",
        "https://ghp0123456789@h/x.csv",
        "https://${DATA_USER}:hunter22@h/x.csv",
        "https://${data_user}:${data_token}@h/x.csv",
    ):
        with pytest.raises(UsageError) as caught:
            refuse_credentials("--set", f"dataset={value}")
        text = str(caught.value)
        assert "carries credentials in its URL" in text
        assert "${DATA_TOKEN}" in text  # the placeholder form to use instead
        assert "hunter22" not in text
        assert "ghp0123456789" not in text
    with pytest.raises(UsageError, match=r"sdk\.aws\.s3\.credentials"):
        refuse_credentials("--set", "dataset=s3://AKID:SECRETKEY@bucket/x.csv")


def test_placeholders_and_plain_values_are_no_secret() -> None:
    for fine in (
        *(PLACEHOLDER_URL, "https://alice:${T}@h/x.csv", "wine", "https://h/x.csv"),
        *(QUERY_URL, "${DATA_URL}", "https://h/x.csv?v=2&sigma=1", "https://h/x?token="),
    ):
        refuse_credentials("--set", f"dataset={fine}")


def test_placeholders_expand_from_the_environment_percent_encoded() -> None:
    env = {"DATA_USER": "reader", "DATA_TOKEN": "a@b/c:d"}
    url, secrets = expand_placeholders(PLACEHOLDER_URL, env)
    assert url == "https://reader:a%40b%2Fc%3Ad@data.example/wine.csv"
    assert set(secrets) == {"reader", "a@b/c:d", "a%40b%2Fc%3Ad"}
    assert redact(f"GET {url} failed", secrets) == "GET https://***@data.example/wine.csv failed"
    assert placeholder_names(PLACEHOLDER_URL) == ["DATA_USER", "DATA_TOKEN"]
    assert expand_placeholders("https://h/x.csv", {}) == ("https://h/x.csv", [])
    for missing in ({"DATA_USER": "reader"}, {"DATA_USER": "reader", "DATA_TOKEN": ""}):
        with pytest.raises(UsageError) as caught:
            check_environment(PLACEHOLDER_URL, missing)
        assert "${DATA_TOKEN}, which is not set" in caught.value.message
        assert 'agent.extra_docker_arguments: ["-e", "DATA_TOKEN"]' in str(caught.value.hint)


def test_dataset_references_with_placeholders_are_checked() -> None:
    ref = check_reference(PLACEHOLDER_URL, "structured", "classifier")
    assert (ref.kind, ref.value, ref.source) == ("remote", PLACEHOLDER_URL, PLACEHOLDER_URL)
    with pytest.raises(UsageError, match="outside its user:password part"):
        check_reference("https://h/${FILE}.csv", "structured", "classifier")
    with pytest.raises(UsageError, match="malformed"):
        check_reference("https://${data_user}:x@h/x.csv", "structured", "classifier")
    with pytest.raises(UsageError, match=r"clearml\.conf"):
        check_reference("s3://${KEY}:${SECRET}@bucket/x.csv", "structured", "classifier")


# -- the rules, pure: query values and whole signed URLs ---------------------------------------


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


# -- every form: a search, launch, a template, reproduce (against the emulator) ----------------


@every_form
def test_a_search_never_clones_trials_with_a_secret(form: Form) -> None:
    spec = SearchSpec(role=CONTROLLER)
    literal = form.literal.format(secret=fresh())
    with pytest.raises(UsageError, match=re.escape(form.refusal)):
        ClearMLBackend(None, JOBS[JOB], {"dataset": literal}, spec, "f")
    ClearMLBackend(None, JOBS[JOB], {"dataset": form.placeholder}, spec, "f")


@every_form
def test_launch_refuses_a_literal_secret_and_creates_nothing(
    synced_server: Emulator, form: Form
) -> None:
    secret = fresh()
    for option, value, expected in form.launch_cases:
        line = refused(synced_server, "-q", "cpu", option, value.format(secret=secret))
        assert expected in line, line
        assert secret not in line
        assert form.mask in line
    # --dry-run is refused the same way, and a parallel search too (it plans through launch).
    dataset = f"dataset={form.literal.format(secret=secret)}"
    line = refused(synced_server, "-q", "cpu", "--dry-run", "--set", dataset)
    assert form.hint in line
    assert secret not in line
    line = refused(synced_server, "-q", "cpu", "--parallel", "2", "--set", dataset)
    assert form.refusal in line
    assert not launched(synced_server)


@every_form
def test_placeholders_are_stored_verbatim(
    synced_server: Emulator, monkeypatch: pytest.MonkeyPatch, form: Form
) -> None:
    # The laptop needs none of the variables: the agent expands them.
    for name in form.variable_names:
        monkeypatch.delenv(name, raising=False)
    result = invoke("launch", JOB, "-q", "cpu", "--set", f"dataset={form.placeholder}")
    assert result.exit_code == 0, result.output
    assert f"expands {form.variables} from its environment" in result.stderr
    (task,) = launched(synced_server)
    assert task["hyperparams"]["General"]["dataset"]["value"] == form.placeholder
    assert form.placeholder in task["name"]

    sweep = f"dataset={form.placeholder},{form.other_placeholder}"
    result = invoke("launch", JOB, "-q", "cpu", "--sweep", sweep)
    assert result.exit_code == 0, result.output
    stored = sorted(
        t["hyperparams"]["General"]["dataset"]["value"] for t in launched(synced_server)
    )
    assert stored == sorted([form.placeholder, form.placeholder, form.other_placeholder])


@every_form
def test_a_template_holding_a_secret_is_not_copied(synced_server: Emulator, form: Form) -> None:
    secret = fresh()
    (template,) = [t for t in synced_server.state.tasks.values() if t["name"].startswith(JOB)]
    with synced_server.state.lock:
        template["hyperparams"]["General"]["dataset"]["value"] = form.literal.format(secret=secret)
    line = refused(synced_server, "-q", "cpu")
    assert "template" in line
    assert "templates sync" in line
    assert secret not in line
    # Overriding the dataset launches without copying the template's value.
    result = invoke("launch", JOB, "-q", "cpu", "--set", f"dataset={form.placeholder}")
    assert result.exit_code == 0, result.output
    (task,) = launched(synced_server)
    assert secret not in str(task)


def completed_run(emulator: Emulator, dataset: str) -> str:
    general = {
        "seed": {"section": "General", "name": "seed", "value": "7", "type": "int"},
        "dataset": {"section": "General", "name": "dataset", "value": dataset, "type": "str"},
    }
    task_id = emulator.create_task(
        "old run",
        project="ak-remote",
        hyperparams={"General": general},
        system_tags=[f"ak-remote-job:{JOB}"],
    )
    emulator.call("tasks.started", task=task_id)
    emulator.call("tasks.completed", task=task_id)
    return task_id


@every_form
def test_reproduce_refuses_a_run_recorded_with_its_secret_or_masked(
    synced_server: Emulator, form: Form
) -> None:
    secret = fresh()
    literal = completed_run(synced_server, form.literal.format(secret=secret))
    masked = completed_run(synced_server, form.masked)
    for task_id, expected in ((literal, form.refusal), (masked, "without the URL's")):
        before = snapshot(synced_server)
        result = invoke("reproduce", task_id, "-q", "cpu")
        assert result.exit_code == 2, result.output
        (line,) = error_lines(result.output)
        assert expected in line
        assert form.hint in line
        assert secret not in result.output
        assert snapshot(synced_server) == before


# -- every form: the worker's loader in this process, against the loopback data server ---------


@pytest.mark.parametrize(
    ("form", "path"),
    [(USERINFO, "/wine.zip"), (QUERY, "/wine.csv"), (SIGNED, "/wine.zip")],
    ids=["userinfo-zip", "query-csv", "signed-zip"],
)
def test_loading_fetches_with_the_secret_and_leaves_no_trace(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    form: Form,
    path: str,
    secret: Secret,
    data_server: DataServer,
) -> None:
    """No training: the worker's loader, with HOME (conftest) and the temporary folder inside
    this test's folder, so that ClearML's storage cache is searched too. An archive is unpacked."""
    from ak_remote.runtime import data as data_module

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    reference = form.reference(data_server.port, path)
    for name, value in form.env(secret, data_server.port, path).items():
        monkeypatch.setenv(name, value)
    loaded = data_module.load(reference, "structured", "classifier")
    assert (len(loaded), loaded.target_name, loaded.source) == (178, "cultivar", reference)
    assert data_server.granted == 1
    assert not list(scratch.iterdir())  # the download is gone once loaded

    wrong = form.wrong(secret)
    for name, value in form.env(wrong, data_server.port, path).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(DataError) as caught:
        data_module.load(reference, "structured", "classifier")
    assert caught.value.message == f"could not fetch {reference}: {form.denied}"
    assert form.variables in str(caught.value.hint)
    assert wrong.value not in str(caught.value)
    assert not list(scratch.iterdir())
    for needle in {*secret.needles, *wrong.needles}:
        assert_nowhere(tmp_path, needle)


def test_a_failed_fetch_says_nothing_of_a_placeholder_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connection refused: requests' message quotes the path and query; the expanded value of a
    parameter that no rule knows as secret (`code=`) is redacted all the same."""
    from ak_remote.runtime import data as data_module

    secret = QUERY.new_secret()
    port = free_port()  # a port nothing listens on
    monkeypatch.setenv("FUNC_KEY", secret.value)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    url = f"http://127.0.0.1:{port}/wine.csv?code=${{FUNC_KEY}}"
    with pytest.raises(DataError) as caught:
        data_module.load(url, "structured", "classifier")
    text = str(caught.value)
    assert text.startswith(f"could not fetch {url}: ConnectionError"), text
    assert "?code=***" in text
    for needle in secret.needles:
        assert needle not in text
