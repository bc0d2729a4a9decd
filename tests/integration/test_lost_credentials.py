"""Integration: literal credentials never reach a job's command line (issue 20, item 20).

`ak-remote run` with a dataset URL holding `user:password@` (allowed for local runs, masked in
every record) starts its job; while the job waits for the data, no process of the run carries
the password in its argv (what every user of the machine reads with `ps`). The job still gets
it, through the environment: the server checks it (HTTP basic auth) and the run trains.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from ak_remote.datasets.secrets import job_set_arguments, secret_set_assignments

pytestmark = pytest.mark.slow

PASSWORD = "Pw-7f3a91-secret"


def test_job_set_arguments_keep_credentials_out_of_argv() -> None:
    values = {"dataset": f"https://alice:{PASSWORD}@host/wine.csv", "epochs": "2"}
    argv, env = job_set_arguments(values)
    assert argv == ["--set", "epochs=2"]
    assert PASSWORD in env["AK_REMOTE_SECRET_SETS"]
    environ = dict(env)
    assert secret_set_assignments(environ) == [f"dataset={values['dataset']}"]
    assert environ == {}  # taken out: what the job starts does not inherit it
    placeholders = {"dataset": "https://${U}:${P}@host/wine.csv"}
    assert job_set_arguments(placeholders) == (["--set", f"dataset={placeholders['dataset']}"], {})


class _Data:
    """A CSV behind HTTP basic auth that answers once released (the job waits meanwhile)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.release = threading.Event()
        self.asked = threading.Event()
        self.authorized: list[bool] = []


@pytest.fixture
def data_server() -> Iterator[tuple[str, _Data]]:
    from sklearn.datasets import load_wine

    wine = load_wine()
    rows = [",".join([*wine.feature_names[:4], "cultivar"])]
    rows += [
        ",".join([*(f"{v:.3f}" for v in x[:4]), f"c{y}"])
        for x, y in zip(wine.data, wine.target, strict=True)
    ]
    data = _Data(("\n".join(rows) + "\n").encode())
    expected = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data.asked.set()
            data.release.wait(timeout=300)
            ok = self.headers.get("Authorization") == expected
            data.authorized.append(ok)
            self.send_response(200 if ok else 401)
            self.end_headers()
            if ok:
                self.wfile.write(data.body)

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", data
    finally:
        data.release.set()
        server.shutdown()
        server.server_close()


def test_a_local_runs_password_is_in_no_command_line(
    data_server: tuple[str, _Data], tmp_path: Path
) -> None:
    host, data = data_server
    dataset = f"http://alice:{PASSWORD}@{host}/wine.csv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "AK_REMOTE_"))}
    env.update({"HOME": str(tmp_path / "home"), "TF_CPP_MIN_LOG_LEVEL": "2"})
    (tmp_path / "home").mkdir(exist_ok=True)
    cli = subprocess.Popen(
        [
            *(sys.executable, "-m", "ak_remote", "run", "structured-classifier"),
            *("--set", f"dataset={dataset}", "--set", "max_trials=1", "--set", "epochs=1"),
            *("--run-dir", str(tmp_path / "run")),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert data.asked.wait(timeout=300), "the job never asked for its data"
        tree = [psutil.Process(cli.pid), *psutil.Process(cli.pid).children(recursive=True)]
        jobs = [p for p in tree if any("structured_classifier.py" in a for a in p.cmdline())]
        assert jobs, [p.cmdline() for p in tree]
        for process in tree[1:]:  # the CLI's own argv is what the user typed
            assert not any(PASSWORD in arg for arg in process.cmdline()), process.cmdline()
        data.release.set()
        _, stderr = cli.communicate(timeout=600)
    finally:
        data.release.set()
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0, stderr[-3000:]
    assert data.authorized == [True]  # the job had the password all the same
    assert PASSWORD not in stderr
