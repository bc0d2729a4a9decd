"""TensorBoard as a person sees it: a real run's logs served by the real TensorBoard, opened in
headless Chromium (Debian's `chromium`, driven by Playwright).

One structured-classifier search (2 trials, 1 epoch) runs as an agent would run it; TensorBoard
serves its `tensorboard/` folder on a free loopback port. The tests click through the Graphs,
Histograms, Scalars and HParams tabs and save a screenshot of each under the test's temp folder
(`screenshots0` under pytest's base temp folder, e.g. /tmp/pytest-of-root/pytest-current/).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import CHROMIUM, CHROMIUM_ARGS, TINY, free_port, run_job

pytestmark = pytest.mark.slow

RUNS = ["trial-00/train", "trial-00/validation", "trial-01/train", "trial-01/validation"]
FAILURES = ("Graph visualization failed", "Malformed GraphDef", "No graph definition files")


@pytest.fixture(scope="module")
def board_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tb-run")
    sets = [*TINY, "batch_size=16", "max_trials=2", "target=class"]
    proc = run_job("structured-classifier", sets, base / "work", base / "home")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return base / "work" / "run" / "tensorboard"


@pytest.fixture(scope="module")
def board(board_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a TensorBoard serving the run's logs (the venv's own `tensorboard`)."""
    port = free_port()
    log = tmp_path_factory.mktemp("tb-server") / "tensorboard.log"
    binary = Path(sys.executable).with_name("tensorboard")
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(binary), "--logdir", str(board_dir), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{url}/data/runs", timeout=5) as answer:
                    if b"final/train" in answer.read():
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} missing: apt-get install -y chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def _open(browser: Any, url: str, height: int = 1000) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": height})
    page.goto(url, wait_until="networkidle")
    return page


def _choose(page: Any, dropdown: int, option: str) -> None:
    """Pick `option` in the Graphs tab's `dropdown` (0: run, 1: tag)."""
    page.locator("paper-dropdown-menu").nth(dropdown).click()
    page.get_by_role("option", name=option, exact=True).click()


def _graph_nodes(page: Any) -> set[str]:
    """The names of the nodes the graph view drew (waits until it drew some)."""
    nodes = page.locator("g.node[data-name]")
    nodes.first.wait_for(state="attached", timeout=60_000)
    page.wait_for_timeout(1000)  # the layout settles
    names = nodes.evaluate_all("els => els.map(e => e.getAttribute('data-name'))")
    return {str(name) for name in names}


def _shown(page: Any, text: str, timeout_s: float = 60) -> None:
    """Wait until some element showing exactly `text` is visible (hidden copies live in other
    tabs' DOM)."""
    deadline = time.monotonic() + timeout_s
    matches = page.get_by_text(text, exact=True)
    while not any(match.is_visible() for match in matches.all()):
        assert time.monotonic() < deadline, f"{text!r} is not shown"
        page.wait_for_timeout(500)


def _no_failure(page: Any) -> None:
    for text in FAILURES:
        shown = [m for m in page.get_by_text(text).all() if m.is_visible()]
        assert not shown, text


@pytest.mark.parametrize("run", ["trial-00/train", "final/train"])
def test_graphs_show_the_layers(browser: Any, board: str, shots: Path, run: str) -> None:
    page = _open(browser, f"{board}/#graphs")
    try:
        _choose(page, 0, run)
        # The op graph (the default tag): ops grouped by layer, each group named by its layer.
        op_nodes = _graph_nodes(page)
        page.screenshot(path=str(shots / f"graph-op-{run.replace('/', '-')}.png"))
        _no_failure(page)
        assert {"dense", "dense_1", "dense_2", "normalization"} <= op_nodes, op_nodes
        assert "functional" not in op_nodes
        # The conceptual graph: one node per layer, none hidden in a `functional` node.
        _choose(page, 1, "keras")
        page.get_by_text("Conceptual graph", exact=True).click()
        page.wait_for_timeout(1000)
        concept = _graph_nodes(page)
        page.screenshot(path=str(shots / f"graph-conceptual-{run.replace('/', '-')}.png"))
        _no_failure(page)
        assert {"input_layer", "normalization", "dense", "dense_1", "dense_2"} <= concept
        assert "classification_head_1" in concept
        assert not any(name.startswith("functional") for name in concept), concept
    finally:
        page.close()


def test_histograms_one_per_trainable_weight(browser: Any, board: str, shots: Path) -> None:
    # Tall: TensorBoard draws only the cards in view.
    page = _open(browser, f"{board}/#histograms", height=3600)
    try:
        # One category per layer; TensorBoard opens the first two, the header opens the others.
        for layer in ("dense", "dense_1", "dense_2"):
            for weight in ("kernel", "bias"):
                card = page.get_by_text(f"{layer}/{weight}", exact=True).first
                if not card.is_visible():
                    page.get_by_text(layer, exact=True).first.click()
                card.wait_for(timeout=60_000)
        page.wait_for_timeout(2000)  # the charts draw
        page.screenshot(path=str(shots / "histograms.png"), full_page=True)
        for statistic in ("normalization/mean", "normalization/variance", "normalization/count"):
            assert page.get_by_text(statistic).count() == 0, statistic
        assert page.get_by_text("kernel/histogram").count() == 0  # Keras' shared tag
    finally:
        page.close()


def test_scalars_and_hparams_use_readable_run_names(browser: Any, board: str, shots: Path) -> None:
    page = _open(browser, f"{board}/#scalars")
    try:
        for run in [*RUNS, "final/train"]:
            _shown(page, run)
        assert page.get_by_text("execution0").count() == 0
        page.screenshot(path=str(shots / "scalars.png"))
        page.goto(f"{board}/#hparams", wait_until="networkidle")
        # Every trial and the final fit are sessions of the HParams table.
        for session in ("trial-00", "trial-01", "final"):
            _shown(page, session)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(shots / "hparams.png"))
    finally:
        page.close()
