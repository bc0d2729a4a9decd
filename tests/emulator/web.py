"""The emulator's web port, served as the official ``clearml-webserver`` serves it.

The official image runs nginx over the built Web UI (clearml-web): static files with
``try_files $uri $uri/ /index.html`` (the app's deep links), a ``/configuration.json`` it
writes at start, ``/api/<rest>`` proxied to the apiserver as ``/<rest>`` and ``/files/<rest>`` to
the fileserver (clearml-server ``docker/build/internal_files/clearml.conf.template``). The
emulator does the same on its web port, in-process: the API and fileserver handlers answer the
proxied paths, so a browser sees one origin and keeps the ``clearml_token_basic`` cookie.

Where the built app comes from (:func:`find_web_dist`): ``--web-dist``, else
``$CLEARML_WEB_DIST``, else ``<repo>/../shared/vendor/clearml-web-2.0/browser``, else the same
next to the checkout this clone came from (``git remote get-url origin``: CI's clean clone).
"""

from __future__ import annotations

import json
import mimetypes
import os
import subprocess
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

WEB_DIST_VAR = "CLEARML_WEB_DIST"
VENDORED = Path("shared/vendor/clearml-web-2.0/browser")
REPO = Path(__file__).resolve().parents[2]

# Answer (HTTP status, body, content type)
Answer = tuple[int, bytes, str]


def _origin_checkout(repo: Path) -> Path | None:
    """The local checkout ``origin`` points at, when it is a path (a clone of a clone)."""
    try:
        url = subprocess.run(
            ["git", "-C", str(repo), "remote", "get-url", "origin"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not url:
        return None
    if url.startswith("file://"):
        url = urllib.parse.urlsplit(url).path
    path = Path(url)
    if not path.is_absolute():
        path = (repo / path).resolve()
    return path if path.is_dir() else None


def web_dist_candidates(
    explicit: Path | None = None, env: Mapping[str, str] | None = None, repo: Path = REPO
) -> list[Path]:
    """Where a built Web UI is looked for, in order."""
    env = os.environ if env is None else env
    found: list[Path] = []
    if explicit is not None:
        return [explicit]
    if env.get(WEB_DIST_VAR):
        found.append(Path(env[WEB_DIST_VAR]))
    found.append(repo.parent / VENDORED)
    origin = _origin_checkout(repo)
    if origin is not None:
        found.append(origin.parent / VENDORED)
    return list(dict.fromkeys(found))


def is_web_dist(path: Path) -> bool:
    """A built clearml-web app: an ``index.html`` holding its root element ``<sm-root>``."""
    index = path / "index.html"
    return index.is_file() and "<sm-root" in index.read_text(errors="replace")


def find_web_dist(
    explicit: Path | None = None, env: Mapping[str, str] | None = None, repo: Path = REPO
) -> tuple[Path | None, list[Path]]:
    """The first built app among :func:`web_dist_candidates`, and every place looked at."""
    candidates = web_dist_candidates(explicit, env, repo)
    for candidate in candidates:
        if is_web_dist(candidate):
            return candidate.resolve(), candidates
    return None, candidates


def configuration(files_url: str) -> bytes:
    """``/configuration.json``: the app calls ``<apiBaseUrl>/v999.0/<endpoint>``.

    The official webserver writes this file from ``WEBSERVER__*`` variables (``{}`` by default,
    and the app then guesses the API at port 8008 of its own host); ``apiBaseUrl: "/api"``
    points it at the proxy instead, and ``fileBaseUrl`` names the fileserver whose URLs the
    artifacts and models carry (the app recognises its own files by that prefix).
    """
    return json.dumps({"apiBaseUrl": "/api", "fileBaseUrl": files_url}).encode()


def static(dist: Path, path: str) -> Answer:
    """A file of the built app; any other path answers ``index.html`` (nginx ``try_files``)."""
    relative = urllib.parse.unquote(path).lstrip("/")
    target = (dist / relative).resolve()
    if not target.is_relative_to(dist) or not target.is_file():
        target = dist / "index.html"
    kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
        kind += "; charset=utf-8"
    return 200, target.read_bytes(), kind


def no_app_page(looked: list[Path]) -> Answer:
    """What the web port shows without a built app: where it looked and how to get one."""
    places = "".join(f"<li><code>{p}</code></li>" for p in looked)
    body = (
        "<html><body><h1>ClearML emulator</h1>"
        "<p>No built ClearML Web UI was found; looked in:</p>"
        f"<ul>{places}</ul>"
        '<p>See <code>tests/emulator/README.md</code>, section "The Web UI", for how to get '
        "one (build clearml-web from its release tag, or run the official "
        "<code>allegroai/clearml-webserver</code> image pointed at this emulator), then pass "
        "<code>--web-dist DIR</code> or set <code>CLEARML_WEB_DIST</code>.</p>"
        "</body></html>"
    )
    return 200, body.encode(), "text/html; charset=utf-8"
