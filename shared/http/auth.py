"""Token authentication for aiohttp: a middleware that reads the bearer token, `requires(role)` per handler.

Tests and clients get a token with `shared.auth.issue_token(secret, Principal(name, Role.X), ttl_s)` using the
site's secret (`shared.auth.secrets.site_secret(settings)`), and send `Authorization: Bearer <token>`. The app
holds the secret as a SiteSecret under AUTH_SECRET.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from shared.auth import Principal, Role, TokenError, verify_token
from shared.auth.secrets import SiteSecret
from shared.http.errors import json_error

__all__ = ["AUTH_SECRET", "Role", "auth_middleware", "principal_of", "requires"]

AUTH_SECRET = web.AppKey("obsflow_auth_secret", SiteSecret)
_PRINCIPAL = web.RequestKey("obsflow_principal", Principal)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach the caller's Principal when a valid bearer token is sent; refuse a bad one with 401."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return json_error(401, "unauthenticated", "send 'Authorization: Bearer <token>'")
        try:
            secret = request.config_dict[AUTH_SECRET]
            request[_PRINCIPAL] = verify_token(secret.value, token.strip(), source=secret.source)
        except TokenError as e:
            return json_error(401, "unauthenticated", str(e))
    return await handler(request)


def principal_of(request: web.Request) -> Principal | None:
    """The authenticated caller, if any."""
    return request.get(_PRINCIPAL)


def requires(minimum: Role) -> Callable[[Handler], Handler]:
    """Decorator: the handler runs only for callers whose role is at least `minimum` (401 / 403 otherwise)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            principal = principal_of(request)
            if principal is None:
                return json_error(401, "unauthenticated", "this endpoint needs a token: `obsflow accounts token NAME`")
            if principal.role < minimum:
                return json_error(
                    403, "forbidden", f"{principal.account} has role {principal.role.label}; "
                    f"this endpoint needs {minimum.label} or higher",
                )
            return await handler(request)

        guarded.minimum_role = minimum  # type: ignore[attr-defined]
        return guarded

    return decorate
