"""Every route of every running service x every kind of caller, generated from the services' route tables.

A route added to any service joins the matrix by itself; one that is neither wrapped by `requires(Role.X)` nor
listed in PUBLIC fails `test_every_route_is_public_or_declares_a_minimum_role`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import requests

from shared.auth import Role
from shared.settings import SERVICES
from tests.api.site import BackgroundSite, Route, retry_while_database_full

# The one list of routes anyone may call without a token (every service serves each of them).
PUBLIC = frozenset({
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("POST", "/api/v1/tokens"),
    ("GET", "/api/v1/openapi.json"), ("GET", "/openapi.json"),
})
PROBE = "matrix-probe"  # the value of every path parameter: names nothing, so no call changes anything


@dataclass(frozen=True)
class Caller:
    """Who calls: a valid role, or a request whose token is missing or bad in one way."""

    name: str
    authorization: Callable[[BackgroundSite], str | None]
    role: Role | None = None  # None: the token is missing or must be refused


CALLERS = [
    Caller("no token", lambda site: None),
    Caller("malformed token", lambda site: "Bearer obsflow.bm90IGEgdG9rZW4.c2lnbmF0dXJl"),
    Caller("not a bearer token", lambda site: "Basic YWRtaW46YWRtaW4="),
    Caller("token signed with another secret",
           lambda site: f"Bearer {site.token(Role.ADMIN, secret='another-site-secret-of-32-bytes-or-more')}"),
    Caller("expired token", lambda site: f"Bearer {site.token(Role.ADMIN, ttl_s=60, issued=time.time() - 3600)}"),
    *(Caller(role.label, lambda site, role=role: f"Bearer {site.token(role)}", role) for role in Role),
]


def _public(route: Route) -> bool:
    method = "GET" if route.method == "HEAD" else route.method  # aiohttp serves HEAD wherever it serves GET
    return (method, route.path) in PUBLIC


def _all_routes(site: BackgroundSite) -> list[Route]:
    return [route for service in SERVICES for route in site.routes(service)]


def test_every_route_is_public_or_declares_a_minimum_role(api_site: BackgroundSite) -> None:
    undeclared = [r.label for r in _all_routes(api_site) if r.minimum_role is None and not _public(r)]
    assert not undeclared, f"routes neither in PUBLIC nor wrapped by requires(Role.X): {undeclared}"
    guarded_public = [r.label for r in _all_routes(api_site) if r.minimum_role is not None and _public(r)]
    assert not guarded_public, f"PUBLIC lists routes that require a role: {guarded_public}"
    for service in SERVICES:
        served = {(r.method, r.path) for r in api_site.routes(service) if _public(r) and r.method != "HEAD"}
        assert served == PUBLIC, f"{service} does not serve exactly the public routes: {served ^ PUBLIC}"


def _expected(route: Route, caller: Caller) -> str:
    """What the answer must be: 'refused 401', 'refused 403' or 'let in'."""
    if caller.role is None:
        if _public(route) and caller.name == "no token":
            return "let in"
        return "refused 401"  # a bad token is refused wherever it is sent, so the caller learns it is bad
    if route.minimum_role is not None and caller.role < route.minimum_role:
        return "refused 403"
    return "let in"


def _call(site: BackgroundSite, session: requests.Session, route: Route, caller: Caller) -> requests.Response:
    path = re.sub(r"\{[^}]+\}", PROBE, route.path)
    authorization = caller.authorization(site)
    headers = {"Authorization": authorization} if authorization is not None else {}
    return retry_while_database_full(
        lambda: session.request(route.method, site.url(route.service) + path, headers=headers, timeout=30))


def _verdict(route: Route, caller: Caller, response: requests.Response) -> str | None:
    """None when the answer is right; else what was wrong."""
    status, expected = response.status_code, _expected(route, caller)
    if status >= 500:
        return f"{status} (a server error)"
    if expected == "let in":
        return f"{status}, expected to be let in" if status in (401, 403) else None
    if status != int(expected[-3:]):
        return f"{status}, expected {expected}"
    if route.method != "HEAD" and response.json()["error"]["code"] not in ("unauthenticated", "forbidden"):
        return f"{status} with an unexpected body {response.text[:200]}"
    return None


@pytest.mark.parametrize("caller", CALLERS, ids=lambda caller: caller.name)
def test_every_route_answers_each_caller_as_its_minimum_role_says(
    api_site: BackgroundSite, http: requests.Session, caller: Caller
) -> None:
    routes = _all_routes(api_site)
    assert len(routes) > 60 and {r.service for r in routes} == set(SERVICES)  # the table was really read
    wrong = []
    for route in routes:
        verdict = _verdict(route, caller, _call(api_site, http, route, caller))
        if verdict is not None:
            wrong.append(f"{route.label}: {verdict}")
    assert not wrong, f"as {caller.name}:\n" + "\n".join(wrong)
