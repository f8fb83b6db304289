"""POST /api/v1/tokens: trade an account's password for an API token (argon2id checked here, once)."""

from __future__ import annotations

from aiohttp import web

from shared.auth import issue_token
from shared.auth.accounts import AccountError, accounts_pool, authenticate
from shared.auth.secrets import site_secret
from shared.http.errors import json_error
from shared.settings import Settings


def token_routes(settings: Settings) -> list[web.RouteDef]:
    """The token endpoint every service serves (tokens are site-wide: one secret signs them all)."""

    async def create_token(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            name, password = str(body["name"]), str(body["password"])
        except (ValueError, KeyError, TypeError):
            return json_error(400, "bad_request", 'send {"name": ..., "password": ...} as JSON')
        async with accounts_pool(settings) as pool:
            try:
                principal = await authenticate(pool, name, password)
            except AccountError as e:
                return json_error(401, "unauthenticated", str(e))
        token = issue_token(site_secret(settings), principal, settings.token_ttl_s)
        return web.json_response(
            {"token": token, "account": principal.account, "role": principal.role.label,
             "expires_in_s": settings.token_ttl_s},
            status=201,
        )

    return [web.post("/api/v1/tokens", create_token)]
