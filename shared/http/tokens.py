"""POST /api/v1/tokens: trade an account's password for an API token (argon2id checked here, once).

It runs on the service's own pool (the accounts table by its qualified name), checks at most one password per core
at a time, and limits attempts per account and per client address: a client over either limit gets 429 with
Retry-After before any password is checked. An attempt counts while it is being checked and stays counted only if
it fails, so other people's failures on other accounts never hold back a login.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aiohttp import web

from shared.api.accounts import TokenIssued
from shared.auth import issue_token
from shared.auth.accounts import AccountError, Accounts, valid_account_name
from shared.auth.passwords import PasswordChecker, PasswordChecksBusy
from shared.auth.secrets import SiteSecret
from shared.http.answers import model_response
from shared.http.body import json_object
from shared.http.errors import HttpRefusal, json_error
from shared.ratelimit import SlidingWindow, retry_after_header
from shared.settings import Settings


@dataclass(frozen=True)
class LoginLimits:
    """Failed logins allowed per account and per client address within a window."""

    per_account: SlidingWindow
    per_address: SlidingWindow

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginLimits:
        """The limits the settings name (login_failures_per_account / _per_address / login_failure_window_s)."""
        window = settings.login_failure_window_s
        return cls(SlidingWindow(settings.login_failures_per_account, window),
                   SlidingWindow(settings.login_failures_per_address, window))


class TokenEndpoint:
    """The handler, bound to the service's pool, the site's secret and this process's limits."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, secret: SiteSecret,
                 checker: PasswordChecker | None = None) -> None:
        self._settings = settings
        self._secret = secret
        self._accounts = Accounts(pool, settings.schema_for("accounts"), checker)
        self._limits = LoginLimits.from_settings(settings)

    async def create_token(self, request: web.Request) -> web.Response:
        """POST /api/v1/tokens {name, password} -> 201 {token, account, role, expires_in_s}."""
        body = await json_object(request)
        name, password = body.get("name"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
            raise HttpRefusal(400, "invalid_body", 'send {"name": "<account>", "password": "<password>"} as JSON')
        # An impossible name is one key, not one each: a client may not fill memory with megabyte-long names.
        account = name if valid_account_name(name) else "<not an account name>"
        keys = ((self._limits.per_account, f"account:{account}"),
                (self._limits.per_address, f"address:{request.remote or 'unknown'}"))
        waits = [wait for window, key in keys if (wait := window.retry_after(key)) is not None]
        if waits:
            raise HttpRefusal(429, "too_many_attempts", "too many failed logins for this account or from this "
                              "address; wait before trying again", headers=retry_after_header(max(waits)))
        for window, key in keys:
            window.mark(key)  # counted while checked, so a burst of concurrent guesses is limited too
        try:
            principal = await self._accounts.authenticate(name, password)
        except PasswordChecksBusy as e:
            for window, key in keys:
                window.unmark(key)
            raise HttpRefusal(503, "busy", str(e), headers=retry_after_header(e.retry_after_s)) from None
        except AccountError as e:
            return json_error(401, "unauthenticated", str(e))
        for window, key in keys:
            window.unmark(key)
        token = issue_token(self._secret.value, principal, self._settings.token_ttl_s)
        issued = TokenIssued(token=token, account=principal.account, role=principal.role.label,
                             expires_in_s=self._settings.token_ttl_s)
        return model_response(issued, status=201)


def token_routes(settings: Settings, pool: asyncpg.Pool, secret: SiteSecret,
                 checker: PasswordChecker | None = None) -> list[web.RouteDef]:
    """The token endpoint every service serves (tokens are site-wide: one secret signs them all)."""
    return [web.post("/api/v1/tokens", TokenEndpoint(settings, pool, secret, checker).create_token)]
