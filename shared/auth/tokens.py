"""Signed API tokens: `obsflow.<payload b64>.<hmac b64>`, checked without touching the database.

The payload carries `kid`, a fingerprint of the signing secret, so a token signed with another secret (another
site, or a service or CLI of this site using another data directory or secret) is told apart from an altered one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from shared.auth.roles import Principal, Role
from shared.auth.secrets import key_id
from shared.bounded_json import parse_bounded
from shared.errors import ObsflowError

PREFIX = "obsflow"
MAX_PAYLOAD_BYTES = 4096


class TokenError(ObsflowError):
    """A token that is malformed, forged or expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _claims(payload: str) -> dict:
    """The payload's claims (ValueError when it is not a small JSON object in base64)."""
    claims = parse_bounded(_unb64(payload), max_bytes=MAX_PAYLOAD_BYTES, max_depth=2, what="the token payload")
    if not isinstance(claims, dict):
        raise ValueError("the token payload is not a JSON object")
    return claims


def _sign(secret: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode(), payload.encode(errors="replace"), hashlib.sha256).digest())


def issue_token(secret: str, principal: Principal, ttl_s: float, *, now: float | None = None) -> str:
    """A token for `principal`, valid for `ttl_s` seconds."""
    issued = now if now is not None else time.time()
    body = {"sub": principal.account, "role": principal.role.label, "iat": int(issued), "exp": int(issued + ttl_s),
            "kid": key_id(secret)}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{PREFIX}.{payload}.{_sign(secret, payload)}"


def verify_token(secret: str, token: str, *, now: float | None = None, source: str | None = None) -> Principal:
    """The principal a valid token names; TokenError saying why otherwise (`source`: where `secret` came from)."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise TokenError("not an obsflow token; get one with `obsflow accounts token NAME`")
    _, payload, signature = parts
    # Bytes, not str: compare_digest refuses non-ASCII strings with a TypeError, and a header may carry any.
    if not hmac.compare_digest(_sign(secret, payload).encode(), signature.encode(errors="replace")):
        raise TokenError(_signature_refusal(secret, payload, source))
    try:
        body = _claims(payload)
        principal = Principal(str(body["sub"]), Role.parse(str(body["role"])))
        expires = float(body["exp"])
    except (ValueError, KeyError, TypeError) as e:
        raise TokenError(f"token payload is malformed: {e}") from e
    if (now if now is not None else time.time()) >= expires:
        raise TokenError("token has expired; get a new one with `obsflow accounts token NAME`")
    return principal


def _signature_refusal(secret: str, payload: str, source: str | None) -> str:
    """Why a signature does not match: signed with another secret (the usual cause), or altered."""
    try:
        signed_with = _claims(payload).get("kid")
    except ValueError:
        signed_with = None
    ours = f"key id {key_id(secret)}" + (f", from {source}" if source else "")
    renew = "get a new token from this site: `obsflow accounts token NAME` or POST /api/v1/tokens"
    if isinstance(signed_with, str) and signed_with != key_id(secret):
        return (f"this token was signed with another secret (key id {signed_with[:12]!r}) than the one this service "
                f"checks tokens with ({ours}): it was issued by another site, by a service or CLI of this site that "
                f"uses another data directory or auth secret, or before the secret changed; {renew}")
    if signed_with is None:
        return f"this token's signature does not match this service's secret ({ours}); {renew}"
    return f"this token's signature does not match its contents: it was altered after it was issued; {renew}"
