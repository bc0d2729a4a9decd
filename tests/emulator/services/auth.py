"""auth.login and users.get_current_user: credentials, the JWT, the single user.

Reproduces clearml-server's ``apiserver/service_repo/auth``: ``auth.login`` with HTTP Basic
(access key : secret key) returns a HS256 JWT whose claims carry ``api_version``,
``server_version``, ``feature_set``, ``identity``, ``iat`` and ``exp``; later calls carry
``Authorization: Bearer <token>`` (Basic is accepted too), and a valid bearer token refreshes
itself through ``auth.login``. Errors: no credentials 401/20, malformed Basic 401/21, unknown
key or wrong secret 401/22 (alike), bad token 401/30, unknown scheme 401/10.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

import jwt

from tests.emulator import errors
from tests.emulator.services.base import Service
from tests.emulator.state import COMPANY_ID, USER_ID, USER_NAME

API_VERSION = "2.23"  # the newest API the SDK 2.1.12 ships schemas for
SERVER_VERSION = "1.16.0"
TOKEN_LIFETIME_S = 24 * 3600


class AuthService(Service):
    """users.get_current_user; auth.login is answered by :func:`authorize` in the HTTP layer."""

    def ep_auth__login(self, req: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("auth.login is answered by the HTTP layer")  # pragma: no cover

    def ep_users__get_current_user(self, req: dict[str, Any]) -> dict[str, Any]:
        return {
            "user": {
                "id": USER_ID,
                "name": USER_NAME,
                "company": {"id": COMPANY_ID, "name": "emulator"},
                "role": "user",
                "preferences": {},
            },
            "getting_started": {},
        }


def issue_token(token_secret: str) -> str:
    """A fresh JWT for the emulator's single user, signed with ``token_secret``."""
    claims = {
        "identity": {
            "company": COMPANY_ID,
            "company_name": "emulator",
            "user": USER_ID,
            "user_name": USER_NAME,
            "role": "user",
        },
        "api_version": API_VERSION,
        "server_version": SERVER_VERSION,
        "server_build": "emulator",
        "feature_set": "basic",
        "env": "emulator",
        "iat": int(time.time()),
        "exp": int(time.time()) + TOKEN_LIFETIME_S,
    }
    return jwt.encode(claims, token_secret, algorithm="HS256")


def check_basic(value: str, access_key: str, secret_key: str) -> None:
    """Check an HTTP Basic value against the one pair of credentials the emulator knows."""
    try:
        decoded = base64.b64decode(value.encode(), validate=True).decode("latin-1")
    except (binascii.Error, ValueError) as exc:
        raise errors.BadCredentials(str(exc)) from exc
    key, _, secret = decoded.partition(":")
    # The server answers 401/22 for an unknown key and for a wrong secret alike.
    if (key, secret) != (access_key, secret_key):
        raise errors.InvalidCredentials("failed to locate provided credentials")


def check_token(token: str, token_secret: str) -> None:
    """Check a bearer token: signed by this emulator and not expired."""
    try:
        jwt.decode(token, token_secret, algorithms=["HS256"])
    except jwt.PyJWTError as exc:
        raise errors.InvalidToken(str(exc)) from exc


def authorize(
    endpoint: str, header: str | None, *, access_key: str, secret_key: str, token_secret: str
) -> dict[str, Any] | None:
    """Check credentials; return auth.login's data when the call is auth.login."""
    if not header:
        raise errors.NoCredentials()
    kind, _, value = header.partition(" ")
    if kind.lower() == "basic":
        check_basic(value.strip(), access_key, secret_key)
        if endpoint == "auth.login":
            return {"token": issue_token(token_secret)}
        return None
    if kind.lower() == "bearer":
        if endpoint == "auth.login":
            # The real server refreshes a token from a valid bearer token too.
            check_token(value.strip(), token_secret)
            return {"token": issue_token(token_secret)}
        check_token(value.strip(), token_secret)
        return None
    raise errors.BadAuthType()
