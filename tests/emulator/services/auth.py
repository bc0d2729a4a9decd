"""Credentials, the JWT and its cookie, login modes, the single user and its preferences.

Reproduces clearml-server 2.0's ``apiserver/service_repo/auth``, ``services/auth.py``,
``services/login`` and ``services/users.py``:

- ``auth.login`` with HTTP Basic (access key : secret key) returns a HS256 JWT whose claims
  carry ``api_version`` (the server's newest endpoint version, 2.31), ``server_version``,
  ``feature_set``, ``identity``, ``iat`` and ``exp``, and sets it as the ``clearml_token_basic``
  cookie (``HttpOnly; SameSite=Lax; Path=/``, max age 99999999999, the server's defaults): a
  browser's later calls carry only that cookie. An ``Authorization`` header takes precedence
  over the cookie. A valid bearer token refreshes itself through ``auth.login``.
- Endpoints are authorized per their schema: ``server.info`` and ``debug.ping`` not at all,
  ``login.supported_modes``/``login.logout`` optionally (``authenticated`` tells whether the
  credentials were good), everything else required.
- ``login.supported_modes`` reports fixed-users ("password") mode: the Web UI then shows a
  user name / password form, and the server's Basic check takes the access key and secret key
  there (a fixed user not found falls back to the credentials lookup).
- Errors: no credentials 401/20, malformed Basic 401/21, unknown key or wrong secret 401/22
  (alike), bad token 401/30, unknown scheme 401/10.
- ``users.get_preferences`` / ``set_preferences``: top-level keys of ``preferences`` replace
  the stored ones, a key starting with ``$`` or holding ``.`` at any depth → 400/16.
"""

from __future__ import annotations

import base64
import binascii
import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

import jwt

from tests.emulator import errors
from tests.emulator.services.base import Service
from tests.emulator.services.query import USER_QUERY, select
from tests.emulator.state import (
    COMPANY_ID,
    COMPANY_NAME,
    USER_ID,
    USER_NAME,
    default_user,
)

API_VERSION = "2.23"  # the newest API the SDK 2.1.12 ships schemas for (validation)
SERVER_API_VERSION = "2.31"  # clearml-server 2.0's newest endpoint version (ServiceRepo)
SERVER_VERSION = "2.0.0"
SERVER_BUILD = "emulator"
TOKEN_LIFETIME_S = 30 * 24 * 3600  # apiserver.auth.default_expiration_sec
AUTH_COOKIE = "clearml_token_basic"  # apiserver.auth.session_auth_cookie_name
COOKIE_MAX_AGE = 99999999999  # apiserver.auth.cookies.max_age

# Endpoints whose schema says `authorize: false` (never checked) or `authorize: null` (checked
# when credentials come, not required); every other endpoint requires them.
NO_AUTH = frozenset({"server.info", "debug.ping"})
OPTIONAL_AUTH = frozenset({"login.supported_modes", "login.logout", "auth.logout"})


class AuthService(Service):
    """users.*; auth.login and login.* are answered by :func:`authorize` in the HTTP layer."""

    def ep_auth__login(self, req: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("auth.login is answered by the HTTP layer")  # pragma: no cover

    def ep_auth__logout(self, req: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("auth.logout is answered by the HTTP layer")  # pragma: no cover

    def ep_login__supported_modes(self, req: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("answered by the HTTP layer")  # pragma: no cover

    def ep_login__logout(self, req: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("answered by the HTTP layer")  # pragma: no cover

    def user_doc(self) -> dict[str, Any]:
        """The backend user document of the emulator's single user."""
        return self.state.users.setdefault(USER_ID, default_user())

    def ep_users__get_current_user(self, req: dict[str, Any]) -> dict[str, Any]:
        user = copy.deepcopy(self.user_doc())
        user["company"] = {"id": COMPANY_ID, "name": COMPANY_NAME}
        user["role"] = "user"
        return {
            "user": user,
            "getting_started": None,
            "settings": {"max_download_items": 1000},
        }

    def ep_users__get_preferences(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"preferences": copy.deepcopy(self.user_doc().get("preferences") or {})}

    def ep_users__set_preferences(self, req: dict[str, Any]) -> dict[str, Any]:
        changes = req["preferences"]

        def check(value: Any) -> None:
            if isinstance(value, dict):
                for key, item in value.items():
                    if key.startswith("$") or "." in key:
                        raise errors.FieldsValueError(
                            f"Key {key} is invalid. Keys cannot start with '$' or contain '.'."
                        )
                    check(item)
            elif isinstance(value, list):
                for item in value:
                    check(item)

        check(changes)
        user = self.user_doc()
        base = user.get("preferences") or {}
        new = {**copy.deepcopy(base), **copy.deepcopy(changes)}
        if new == base:
            return {"updated": 0, "fields": {}}
        user["preferences"] = new
        return {"updated": 1, "fields": {"preferences": copy.deepcopy(new)}}

    def ep_users__get_all_ex(self, req: dict[str, Any]) -> dict[str, Any]:
        users = list(self.resolve("users", list(self.state.users)).values())
        result, extra = select(users, req, USER_QUERY, self.scrolls, resolve=self.resolve)
        return {"users": result, **extra}

    def ep_users__get_all(self, req: dict[str, Any]) -> dict[str, Any]:
        users = list(self.resolve("users", list(self.state.users)).values())
        result, extra = select(users, req, USER_QUERY, self.scrolls)
        return {"users": result, **extra}


def issue_token(token_secret: str, key: str = "") -> str:
    """A fresh JWT for the emulator's single user, signed with ``token_secret``; ``key`` (the
    access key it was issued for) lets the request log say which client made each call."""
    now = int(time.time())
    claims = {
        "key": key,
        "identity": {
            "company": COMPANY_ID,
            "company_name": COMPANY_NAME,
            "user": USER_ID,
            "user_name": USER_NAME,
            "role": "user",
        },
        "api_version": SERVER_API_VERSION,
        "server_version": SERVER_VERSION,
        "server_build": SERVER_BUILD,
        "feature_set": "basic",
        "env": "emulator",
        "iat": now,
        "exp": now + TOKEN_LIFETIME_S,
    }
    return jwt.encode(claims, token_secret, algorithm="HS256")


def auth_cookie_header(token: str | None) -> tuple[str, str]:
    """``Set-Cookie`` as the server's Flask ``set_cookie`` writes it (``None`` removes it)."""
    if token is None:
        # Removing: empty value, max_age 0 and an expiry in the past.
        expires = formatdate(0, usegmt=True)
        return "Set-Cookie", f"{AUTH_COOKIE}=; Expires={expires}; Max-Age=0; HttpOnly; Path=/"
    # Browsers cap the lifetime anyway; the date is what Flask writes for the configured max age.
    expires = formatdate(min(time.time() + COOKIE_MAX_AGE, 253402300799), usegmt=True)
    return (
        "Set-Cookie",
        f"{AUTH_COOKIE}={token}; Expires={expires}; Max-Age={COOKIE_MAX_AGE}; HttpOnly; "
        "Path=/; SameSite=Lax",
    )


def check_basic(value: str, keys: Mapping[str, str]) -> str:
    """Check an HTTP Basic value against the credentials the emulator knows (access key to
    secret: one pair, unless a test gave clients their own); returns the access key."""
    try:
        decoded = base64.b64decode(value.encode(), validate=True).decode("latin-1")
    except (binascii.Error, ValueError) as exc:
        raise errors.BadCredentials(str(exc)) from exc
    key, _, secret = decoded.partition(":")
    # The server answers 401/22 for an unknown key and for a wrong secret alike.
    if key not in keys or keys[key] != secret:
        raise errors.InvalidCredentials("failed to locate provided credentials")
    return key


def check_token(token: str, token_secret: str) -> str:
    """Check a bearer token: signed by this emulator and not expired; returns its access key."""
    try:
        claims = jwt.decode(token, token_secret, algorithms=["HS256"])
    except jwt.PyJWTError as exc:
        raise errors.InvalidToken(str(exc)) from exc
    return str(claims.get("key") or "")


@dataclass
class CallAuth:
    """What authorization found for one call."""

    authenticated: bool
    login: dict[str, Any] | None = None  # auth.login's data (the new token)
    key: str | None = None  # the access key behind the call


def authorize(
    endpoint: str,
    header: str | None,
    *,
    cookie: str | None = None,
    keys: Mapping[str, str],
    token_secret: str,
) -> CallAuth:
    """Check a call's credentials as its endpoint requires (header first, then the cookie)."""
    if endpoint in NO_AUTH:
        return CallAuth(authenticated=False)
    if not header and cookie:
        header = f"Bearer {cookie}"
    try:
        return _check(endpoint, header, keys, token_secret)
    except errors.APIError:
        if endpoint in OPTIONAL_AUTH:
            return CallAuth(authenticated=False)
        raise


def _check(
    endpoint: str, header: str | None, keys: Mapping[str, str], token_secret: str
) -> CallAuth:
    if not header:
        raise errors.NoCredentials()
    kind, _, value = header.partition(" ")
    if kind.lower() == "basic":
        key = check_basic(value.strip(), keys)
    elif kind.lower() == "bearer":
        key = check_token(value.strip(), token_secret)
    else:
        raise errors.BadAuthType()
    if endpoint == "auth.login":
        # A valid bearer token gets a fresh one too, as on the server.
        token = issue_token(token_secret, key)
        return CallAuth(authenticated=True, login={"token": token}, key=key)
    return CallAuth(authenticated=True, key=key)
