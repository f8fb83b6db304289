"""Values PostgreSQL cannot take (a NUL character, an integer beyond 64 bits) are refused with a 4xx, never a 500.

schemathesis rarely sends them (it keeps NUL out of paths), so they are sent here: in every path parameter of every
route (from the route tables), and in the bodies that carry text or numbers to a query.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
import requests

from shared.auth import Role
from shared.settings import SERVICES
from tests.api.site import BackgroundSite, retry_while_database_full
from tests.scheduler.runs_support import workflow_config


def _send(site: BackgroundSite, http: requests.Session, service: str, method: str, path: str,
          **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {site.token(Role.ADMIN)}", **kwargs.pop("headers", {})}
    return retry_while_database_full(
        lambda: http.request(method, site.url(service) + path, headers=headers, timeout=30, **kwargs))


def test_a_nul_in_any_path_parameter_is_refused(api_site: BackgroundSite, http: requests.Session) -> None:
    wrong = []
    routes = [r for s in SERVICES for r in api_site.routes(s) if "{" in r.path]
    assert len(routes) >= 10
    for route in routes:
        response = _send(api_site, http, route.service, route.method, re.sub(r"\{[^}]+\}", "zen%00.uvh5", route.path))
        if not 400 <= response.status_code < 500:
            wrong.append(f"{route.label}: {response.status_code} {response.text[:200]}")
    assert not wrong, "\n".join(wrong)


def _cursor(payload: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


SEARCHES = {
    "NUL in a text value": {"query": {"name": {"is": "zen\u0000.uvh5"}}},
    "integer beyond 64 bits": {"query": {"size": {">": 10**30}}},
    "offset beyond 64 bits": {"offset": 2**63},
    "forged cursor with a NUL": {"cursor": _cursor(["files", 2459122.3, "zen\u0000"])},
}


@pytest.mark.parametrize("search", SEARCHES.values(), ids=SEARCHES.keys())
def test_a_search_postgresql_could_not_run_is_an_invalid_search(
    api_site: BackgroundSite, http: requests.Session, search: Any
) -> None:
    response = _send(api_site, http, "catalog", "POST", "/api/v1/search", json=search)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_search"


def test_a_number_beyond_a_float_is_an_invalid_body(api_site: BackgroundSite, http: requests.Session) -> None:
    # JSON allows it, no float holds it: the one body parser refuses it before any handler sees it.
    body = b'{"query": {"start_jd": {">": 1' + b"0" * 400 + b"}}}"
    response = _send(api_site, http, "catalog", "POST", "/api/v1/search", data=body,
                     headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_body"


def test_nul_characters_in_stored_text_are_refused(
    api_site: BackgroundSite, http: requests.Session, tmp_path: Any
) -> None:
    announcement = {"name": "zen.2459122.40000.sum.uvh5", "type": "uvh5", "size": 5,
                    "checksum": "xxh3-128:" + "1" * 32, "metadata": {"note": "a\u0000b"}}
    sent = [
        ("ingest", "/api/v1/uploads", announcement),
        ("scheduler", "/api/v1/workflows",
         {"name": "night\u0000ly", "config_text": workflow_config(api_site.root / "scripts"), "trigger": "manual"}),
    ]
    for service, path, body in sent:
        response = _send(api_site, http, service, "POST", path, json=body)
        assert response.status_code == 400, (path, response.text)
        assert "NUL" in response.json()["error"]["message"], (path, response.text)
    # A name that cannot be an account is refused like a wrong password: nothing to learn about names.
    response = _send(api_site, http, "ingest", "POST", "/api/v1/tokens", json={"name": "ad\u0000min",
                                                                              "password": "x" * 12})
    assert response.status_code == 401, response.text
