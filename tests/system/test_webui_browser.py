"""The ClearML Web UI as a user sees our runs: the built clearml-web 2.0 app, served as the
official webserver serves it (``/configuration.json``, ``/api`` and ``/files`` proxies) on the
emulator's web port, driven in headless Chromium (Debian's ``chromium`` through Playwright).

Real runs first, as a user makes them: ``ak-remote templates sync``, a two-run sweep and a
parallel search of two trials, on real ``clearml-agent`` daemons (tiny structured-classifier
jobs). Then, in the browser: log in with the access key and secret key; the project's task list
with the sweep's runs, the search, its trials and its final fit; a run's hyperparameters,
scalars (charts drawn), plots, console, artifacts and output model (framework, labels,
metadata); the search's own reports; the models list without duplicates; and the links
``ak-remote compare`` prints, for two runs and for a search: both tasks in the hyperparameters
and both curves in the scalars graph.

Every API call the app makes is recorded; a test fails naming the call when the emulator
answers "Unable to find endpoint" or any error the real server would not give the app (all of
them, but the 401s before logging in). Screenshots go to the test's temp folder (``webui-shots``
under pytest's base temp folder, e.g. /tmp/pytest-of-root/pytest-current/).

The built app comes from the emulator's lookup (``tests/emulator/web.py``): ``CLEARML_WEB_DIST``,
else ``../shared/vendor/clearml-web-2.0/browser`` next to this checkout or the one it was cloned
from. Without one the tests fail, saying where they looked.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.emulator.agent import running_agent, wait_for_status
from tests.emulator.server import Emulator
from tests.emulator.web import WEB_DIST_VAR, find_web_dist
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, JOB, invoke, ok, sets

pytestmark = pytest.mark.slow

# Read at import: tests/conftest.py strips CLEARML_* from each test's environment.
_WEB_DIST_ENV = {WEB_DIST_VAR: os.environ[WEB_DIST_VAR]} if os.environ.get(WEB_DIST_VAR) else {}
SMALL = sets("max_samples=120", "histogram_freq=0")  # the jobs' own epochs


@dataclass
class Site:
    """The emulator serving the Web UI, and what the runs made on it."""

    emulator: Emulator
    project: str  # the `ak-remote` project's id
    sweep: list[str]  # the sweep's two runs: epochs=1, epochs=2
    search: str
    trials: list[str]  # "trial 00", "trial 01"
    final: str
    names: dict[str, str] = field(default_factory=dict)  # task id -> name

    def task(self, task_id: str) -> dict[str, Any]:
        return self.emulator.get_task(task_id)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    dist, looked = find_web_dist(env=_WEB_DIST_ENV)
    if dist is None:
        pytest.fail(
            f"no built ClearML Web UI (looked in: {', '.join(map(str, looked))}); "
            "tests/emulator/README.md, 'The Web UI', says how to get one",
            pytrace=False,
        )
    base = tmp_path_factory.mktemp("webui")
    emulator = Emulator(config_dir=base / "config", web_dist=dist, web_looked=looked).start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            # This fixture outlives each test's isolated HOME: it makes its own.
            (base / "home").mkdir()
            patch.setenv("HOME", str(base / "home"))
            for key, value in emulator.env().items():
                patch.setenv(key, value)
            patch.setenv("AK_REMOTE_POLL_INTERVAL", "1")
            patch.chdir(base)
            yield _make_runs(emulator, base)
    finally:
        emulator.stop()
    assert not emulator.internal_errors, f"emulator bugs: {emulator.internal_errors}"


def _make_runs(emulator: Emulator, base: Path) -> Site:
    """A sweep of two runs and a search of two trials, run by real agents."""
    ok(invoke("templates", "sync", "--image", "ak-remote-worker:test-cpu"))
    emulator.create_queue("gpu")
    emulator.create_queue("services")
    logs = base / "agents"
    with (
        running_agent(emulator, "gpu", log_dir=logs) as first,
        running_agent(emulator, "gpu", log_dir=logs),
        running_agent(emulator, "services", log_dir=logs),
    ):
        launched = ok(
            invoke("launch", JOB, "-q", "gpu", "--set", "max_trials=1", *SMALL,
                   "--sweep", "epochs=1,2")
        )  # fmt: skip
        sweep = launched.stdout.split()
        searched = ok(
            invoke("launch", JOB, "-q", "gpu", "--set", "max_trials=2", "--set", "epochs=2",
                   *SMALL, "--parallel", "2", "--controller-queue", "services")
        )  # fmt: skip
        search = searched.stdout.split()[0]
        for task_id in [*sweep, search]:
            done = wait_for_status(emulator, task_id, timeout=900, agent=first)
            assert done["status"] == "completed", done.get("status_message")
    with emulator.state.lock:
        tasks = list(emulator.state.tasks.values())
        children = [t for t in tasks if t.get("parent") == search]
        names = {str(t["id"]): str(t["name"]) for t in tasks}
    trials = sorted(
        (t for t in children if t["name"].startswith("trial ")), key=lambda t: t["name"]
    )
    finals = [t for t in children if t["name"] == "final fit"]
    assert [t["name"] for t in trials] == ["trial 00", "trial 01"]
    assert len(finals) == 1
    by_epochs = sorted(sweep, key=lambda i: names[i])  # "... epochs=1", "... epochs=2"
    return Site(
        emulator=emulator,
        project=str(emulator.get_task(search)["project"]),
        sweep=by_epochs,
        search=search,
        trials=[str(t["id"]) for t in trials],
        final=str(finals[0]["id"]),
        names=names,
    )


# ---------------------------------------------------------------------------- the browser
@dataclass
class Call:
    endpoint: str
    status: int
    message: str
    body: str


@dataclass
class Browser:
    """A logged-in Chromium page on the Web UI; every API call it made."""

    page: Any
    base: str
    shots: Path
    calls: list[Call]
    login_at: int = 0  # calls made before the login

    def open(self, path: str) -> None:
        self.page.goto(self.base + path, wait_until="networkidle")

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"))

    def shown(self, text: str, timeout_s: float = 60, exact: bool = True) -> None:
        """Wait until an element showing `text` is visible (hidden copies live in other tabs)."""
        deadline = time.monotonic() + timeout_s
        matches = self.page.get_by_text(text, exact=exact)
        while not any(match.is_visible() for match in matches.all()):
            assert time.monotonic() < deadline, f"{text!r} is not shown on {self.page.url}"
            self.page.wait_for_timeout(500)

    def charts(self, least: int = 1, timeout_s: float = 60) -> list[dict[str, Any]]:
        """The Plotly charts drawn: legend entries, and points per trace (waits for `least`)."""
        deadline = time.monotonic() + timeout_s
        while True:
            found: list[dict[str, Any]] = self.page.evaluate(
                """() => [...document.querySelectorAll('.js-plotly-plot')].map(plot => ({
                    legend: [...plot.querySelectorAll('.legendtext')].map(x => x.textContent),
                    points: [...plot.querySelectorAll('.scatterlayer .trace')]
                        .map(t => t.querySelectorAll('path.point').length),
                    lines: plot.querySelectorAll('.scatterlayer path.js-line').length,
                    parcoords: plot.querySelectorAll('.parcoords .axis').length,
                    table: plot.querySelectorAll('.table .cell-text').length,
                }))"""
            )
            drawn = [c for c in found if c["legend"] or c["parcoords"] or c["table"]]
            if len(drawn) >= least:
                return drawn
            assert time.monotonic() < deadline, f"{len(drawn)} chart(s) on {self.page.url}"
            self.page.wait_for_timeout(500)

    def bad_calls(self, since: int = 0) -> list[str]:
        """Calls answered with an error the real server would not give the app."""
        bad = []
        for index, call in enumerate(self.calls[since:], start=since):
            if call.status < 400:
                continue
            if call.status == 401 and index < self.login_at:
                continue  # not logged in yet: the server answers 401 too
            bad.append(f"{call.endpoint} -> {call.status} {call.message} (body {call.body[:300]})")
        return bad


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("webui-shots")


@pytest.fixture(scope="module")
def browser(site: Site, shots: Path) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} missing: bash .ci/browser.sh"
    base = site.emulator.web_url
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = chromium.new_context(viewport={"width": 1500, "height": 1000})
        # The app links to GitHub, Slack and its update check: nothing leaves the machine.
        context.route(lambda url: not url.startswith(base), lambda route: route.abort())
        calls: list[Call] = []

        def record(response: Any) -> None:
            path = response.url[len(base) :] if response.url.startswith(base) else ""
            if not path.startswith("/api/"):
                return
            try:
                message = str(response.json().get("meta", {}).get("result_msg", ""))
            except Exception:  # noqa: BLE001 - not JSON: kept as an empty message
                message = ""
            calls.append(
                Call(
                    endpoint=path.rsplit("/", 1)[-1],
                    status=response.status,
                    message=message,
                    body=response.request.post_data or "",
                )
            )

        context.on("response", record)
        page = context.new_page()
        session = Browser(page=page, base=base, shots=shots, calls=calls)
        _log_in(session, site)
        yield session
        context.close()
        chromium.close()


def _log_in(session: Browser, site: Site) -> None:
    """The login form, as a user fills it in: the access key and the secret key."""
    page = session.page
    session.open("/")
    page.get_by_text("Username").first.wait_for(timeout=60_000)
    session.shot("00-login")
    page.locator("input").nth(0).fill(site.emulator.access_key)
    page.locator("input[type=password]").fill(site.emulator.secret_key)
    session.login_at = len(session.calls)
    page.get_by_role("button", name=re.compile("login", re.IGNORECASE)).click()
    page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert "clearml_token_basic" in cookies, cookies.keys()
    assert cookies["clearml_token_basic"]["httpOnly"]


def no_bad_calls(session: Browser, since: int) -> None:
    bad = session.bad_calls(since)
    assert not bad, "the app got errors the real server would not give:\n" + "\n".join(bad)


# ---------------------------------------------------------------------------- the tests
def test_login_leads_to_the_projects(browser: Browser, site: Site) -> None:
    browser.open("/projects")
    browser.shown("ak-remote")
    browser.shot("01-projects")
    endpoints = {c.endpoint for c in browser.calls}
    assert {"login.supported_modes", "auth.login", "users.get_current_user"} <= endpoints
    no_bad_calls(browser, 0)


def test_task_list_shows_the_sweep_and_the_search_with_its_trials(
    browser: Browser, site: Site
) -> None:
    start = len(browser.calls)
    browser.open(f"/projects/{site.project}/tasks")
    for name in ("trial 00", "trial 01", "final fit", site.names[site.search]):
        browser.shown(name)
    for run in site.sweep:
        browser.shown(site.names[run])
    browser.shot("02-task-list")
    # A trial is the search's child: its info tab names the search as its parent.
    browser.open(f"/projects/{site.project}/tasks/{site.trials[0]}/general")
    browser.shown("PARENT TASK:")
    browser.shown(site.names[site.search])
    browser.shot("03-trial-info")
    no_bad_calls(browser, start)


def test_a_run_shows_its_parameters_scalars_plots_artifacts_and_model(
    browser: Browser, site: Site
) -> None:
    start = len(browser.calls)
    run = site.sweep[1]  # epochs=2
    task_path = f"/projects/{site.project}/tasks/{run}"
    browser.open(f"{task_path}/hyper-params/hyper-param/General")
    browser.shown("epochs")
    values = browser.page.locator("body").inner_text()
    assert re.search(r"\bepochs\s+2\b", values), values[:3000]
    browser.shot("04-run-hyperparameters")

    browser.open(f"{task_path}/info-output/metrics/scalar")
    charts = browser.charts(least=2)
    legends = {entry for chart in charts for entry in chart["legend"]}
    # The final fit's curves and the trial's, each with one point per epoch (iterations are
    # epochs: 1 and 2).
    assert {"final/train", "trial-00/train", "trial-00/validation"} <= legends, legends
    assert any(sum(c["points"]) >= 4 for c in charts), charts
    browser.shot("05-run-scalars")

    browser.open(f"{task_path}/info-output/metrics/plots")
    browser.shown("confusion matrix", exact=False)
    browser.shot("06-run-plots")

    browser.open(f"{task_path}/info-output/log")
    browser.shown("test metrics:", exact=False)  # what the job printed, paged by the console
    browser.shot("06b-run-console")

    browser.open(f"{task_path}/artifacts")
    for name in ("model.keras", "summary.json", "savedmodel"):
        browser.shown(name)
    browser.shown("model_package")
    browser.page.get_by_text("model_package", exact=True).first.click()
    browser.shown("structured-classifier model")
    browser.shot("07-run-artifacts-output-model")

    model_id = site.task(run)["models"]["output"][-1]["model"]
    model_path = f"/projects/{site.project}/models/{model_id}"
    browser.open(f"{model_path}/general")
    browser.shown("TensorFlow")
    browser.shown(f"Created by task id: {run}", exact=False)
    browser.shot("08-model-general")
    browser.open(f"{model_path}/labels")
    browser.shown("class_0")
    browser.shot("09-model-labels")
    browser.open(f"{model_path}/metadata")
    browser.shown("class_names")
    browser.shot("10-model-metadata")
    no_bad_calls(browser, start)


def test_the_search_shows_what_an_optimizer_shows(browser: Browser, site: Site) -> None:
    start = len(browser.calls)
    task_path = f"/projects/{site.project}/tasks/{site.search}"
    browser.open(f"{task_path}/info-output/metrics/scalar")
    charts = browser.charts()
    objective = [c for c in charts if {"trial", "best so far"} <= set(c["legend"])]
    assert objective, charts
    browser.shot("11-search-scalars")
    browser.open(f"{task_path}/info-output/metrics/plots")
    browser.shown("Parallel Coordinates", exact=False)
    browser.shown("summary", exact=False)
    drawn = browser.charts(least=2)
    assert any(c["parcoords"] >= 3 for c in drawn), drawn  # trial, >= 1 value, objective
    assert any(c["table"] > 0 for c in drawn), drawn
    browser.shot("12-search-plots")
    no_bad_calls(browser, start)


def test_models_list_holds_each_model_once(browser: Browser, site: Site) -> None:
    start = len(browser.calls)
    browser.open(f"/projects/{site.project}/models")
    browser.shown("structured-classifier model")
    browser.page.wait_for_timeout(1500)  # the list's later pages, if it asked for any
    rows = browser.page.locator("tr:has-text('structured-classifier model')")
    with site.emulator.state.lock:
        models = [m for m in site.emulator.state.models.values() if m.get("project")]
    # The two sweep runs' models and the final fit's (the search shows the same model).
    assert len(models) == 3
    assert rows.count() == len(models), rows.all_inner_texts()
    browser.shot("13-models")
    no_bad_calls(browser, start)


def _compare_link(*ids: str) -> str:
    result = ok(invoke("compare", *ids))
    found = re.search(r"Web UI comparison: (\S+)", result.stderr)
    assert found, result.stderr
    return found.group(1)


def _opens_both(browser: Browser, link: str, names: list[str], label: str) -> None:
    """The compare link's scalars graph draws both tasks' curves; the hyperparameters page
    shows both tasks."""
    assert link.startswith(browser.base), link
    browser.page.goto(link, wait_until="networkidle")
    charts = browser.charts()
    both = [
        c
        for c in charts
        if all(name in c["legend"] for name in names)
        and len(c["points"]) >= 2
        and all(p > 0 for p in c["points"])
    ]
    assert both, charts
    browser.shot(f"{label}-scalars")
    browser.page.goto(
        link.replace("/scalars/graph", "/hyper-params/values"), wait_until="networkidle"
    )
    for name in names:
        browser.shown(name, exact=False)
    browser.page.locator("span.title-key", has_text="General").first.click()
    browser.shown("epochs")
    columns = browser.page.locator(".card-body").all_inner_texts()
    sections = [text for text in columns if "epochs" in text]
    assert len(sections) == 2, columns
    browser.shot(f"{label}-hyperparameters")


def test_compare_link_of_two_runs(
    browser: Browser, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in site.emulator.env().items():
        monkeypatch.setenv(key, value)
    start = len(browser.calls)
    link = _compare_link(*site.sweep)
    assert "/compare-tasks;ids=" in link  # the route of a 2.x server's web app
    _opens_both(browser, link, [site.names[i] for i in site.sweep], "14-compare-runs")
    no_bad_calls(browser, start)


def test_compare_link_of_a_search(
    browser: Browser, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in site.emulator.env().items():
        monkeypatch.setenv(key, value)
    start = len(browser.calls)
    link = _compare_link(site.search)
    ids = link.split(";ids=", 1)[1].split("/", 1)[0].split(",")
    assert sorted(ids) == sorted(site.trials)  # its finished trials
    _opens_both(browser, link, ["trial 00", "trial 01"], "15-compare-search")
    no_bad_calls(browser, start)


def test_every_call_the_app_made_was_answered(browser: Browser) -> None:
    """Across the whole session: no endpoint unknown to the emulator, no server error."""
    endpoints = sorted({c.endpoint for c in browser.calls})
    summary = browser.shots / "api-calls.json"
    summary.write_text(json.dumps({"calls": len(browser.calls), "endpoints": endpoints}, indent=1))
    unknown = [c.endpoint for c in browser.calls if "Unable to find endpoint" in c.message]
    assert not unknown, unknown
    no_bad_calls(browser, 0)
