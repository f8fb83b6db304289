"""Signed API tokens: `obsflow.<payload b64>.<hmac b64>`, checked without touching the database."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from shared.auth.roles import Principal, Role
from shared.errors import ObsflowError

PREFIX = "obsflow"


class TokenError(ObsflowError):
    """A token that is malformed, forged or expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())


def issue_token(secret: str, principal: Principal, ttl_s: float, *, now: float | None = None) -> str:
    """A token for `principal`, valid for `ttl_s` seconds."""
    issued = now if now is not None else time.time()
    body = {"sub": principal.account, "role": principal.role.label, "iat": int(issued), "exp": int(issued + ttl_s)}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{PREFIX}.{payload}.{_sign(secret, payload)}"


def verify_token(secret: str, token: str, *, now: float | None = None) -> Principal:
    """The principal a valid token names; TokenError saying why otherwise."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise TokenError("not an obsflow token; get one with `obsflow accounts token NAME`")
    _, payload, signature = parts
    if not hmac.compare_digest(_sign(secret, payload), signature):
        raise TokenError("token signature is invalid (forged, or issued by another site)")
    try:
        body = json.loads(_unb64(payload))
        principal = Principal(str(body["sub"]), Role.parse(str(body["role"])))
        expires = float(body["exp"])
    except (ValueError, KeyError, TypeError) as e:
        raise TokenError(f"token payload is malformed: {e}") from e
    if (now if now is not None else time.time()) >= expires:
        raise TokenError("token has expired; get a new one with `obsflow accounts token NAME`")
    return principal
