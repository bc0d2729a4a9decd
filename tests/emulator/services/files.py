"""The fileserver: multipart upload, download, delete of paths kept in memory.

Reproduces clearml-server's fileserver (``fileserver/fileserver.py``) as the SDK and the agent
use it: a multipart POST stores each part under the POST path joined with the part's field name
and answers the stored paths as JSON; GET/HEAD return the bytes (404 when absent); DELETE
removes. No authentication and no directory listing (see README.md). Fault injection and the
request log stay in the HTTP layer (``server.py``).
"""

from __future__ import annotations

import json
import urllib.parse
from email import policy
from email.parser import BytesParser

from tests.emulator.state import ServerState

# (HTTP status, body, content type) of one fileserver answer
Answer = tuple[int, bytes, str]


def upload(
    state: ServerState, path: str, content_type: str, raw: bytes
) -> tuple[Answer, list[str] | None]:
    """Store the parts of a multipart POST to ``path`` (as sent); return the answer and the
    stored paths (None when the body is not multipart)."""
    if not content_type.startswith("multipart/form-data"):
        return (400, b"expected multipart/form-data", "text/plain"), None
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
    )
    stored: dict[str, str] = {}
    prefix = urllib.parse.unquote(urllib.parse.urlsplit(path).path).rstrip("/")
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        name = str(name)
        target = f"{prefix}/{name.lstrip('/')}"
        decoded = part.get_payload(decode=True)
        payload = decoded if isinstance(decoded, bytes) else b""
        with state.lock:
            state.files[target] = payload
        stored[name] = target
    paths = sorted(stored.values())
    if not stored:
        return (400, b"no file parts", "text/plain"), paths
    return (200, json.dumps(stored).encode("utf-8"), "application/json"), paths


def download(state: ServerState, path: str) -> Answer:
    """GET/HEAD of a stored (percent-decoded) path."""
    with state.lock:
        content = state.files.get(path)
    if content is None:
        return 404, b"file not found", "text/plain"
    return 200, content, "application/octet-stream"


def delete(state: ServerState, path: str) -> Answer:
    """DELETE of a stored (percent-decoded) path."""
    with state.lock:
        found = state.files.pop(path, None) is not None
    return (200, b"{}", "text/plain") if found else (404, b"file not found", "text/plain")
