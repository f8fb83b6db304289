"""schemathesis against every service's OpenAPI document, on the real running services.

Every operation is exercised from the document's examples, its coverage cases (boundaries, missing and wrong
fields, methods it does not declare) and fuzzed data, valid and invalid, as an admin and as a read-only account.
Every response must be no server error and conform: status code, content type, headers and body as declared,
invalid data refused with a 4xx, a declared security requirement enforced. The examples are bounded
(OBSFLOW_SCHEMATHESIS_EXAMPLES, default 12 per operation and caller) and seeded (OBSFLOW_SCHEMATHESIS_SEED), so
a run takes about a minute and a failure reproduces; set another seed to explore further.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest
import requests
import schemathesis

from shared.auth import Role
from tests.api.site import BackgroundSite, retry_while_database_full

CHECKS = (
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
    "response_schema_conformance", "negative_data_rejection", "missing_required_header", "unsupported_method",
    "ignored_auth",
)
CONFIG = schemathesis.Config.from_dict({
    "seed": int(os.environ.get("OBSFLOW_SCHEMATHESIS_SEED", "20261130")),
    "generation": {"max-examples": int(os.environ.get("OBSFLOW_SCHEMATHESIS_EXAMPLES", "12")), "mode": "all",
                   "database": "none",
                   # The token is the caller's (admin or read-only), sent with every case; ignored_auth checks that
                   # leaving it out or forging it is refused.
                   "with-security-parameters": False},
    "phases": {"stateful": {"enabled": False}},
    "checks": {
        "enabled": False,
        **{name: {"enabled": True} for name in CHECKS},
        # 507 is ingest's declared refusal of an upload no store has room for (the test store is a small disk),
        # not a fault; any other 5xx is one (and a 507 elsewhere is undeclared: status_code_conformance).
        "not_a_server_error": {"enabled": True, "expected-statuses": ["2xx", "3xx", "4xx", "507"]},
        # 413: a body (or a claimed size) above a limit is refused as too large, which is a refusal too.
        "negative_data_rejection": {"enabled": True, "expected-statuses": [
            "400", "401", "403", "404", "405", "409", "413", "415", "422"]},
    },
})


def _schema(service: str) -> Any:
    document = importlib.import_module(f"services.{service}.openapi").openapi_document()
    return schemathesis.openapi.from_dict(document, config=CONFIG)


@pytest.fixture(scope="module", params=[Role.ADMIN, Role.READ_ONLY], ids=lambda role: role.label)
def caller(request: pytest.FixtureRequest) -> Role:
    """Whose token the requests carry."""
    return request.param


def conforms(case: Any, site: BackgroundSite, http: requests.Session, service: str, role: Role) -> None:
    """Send the case to the running service and run the checks on its answer."""
    sent = {"base_url": site.url(service), "headers": {"Authorization": f"Bearer {site.token(role)}"}, "timeout": 30,
            "session": http}
    response = retry_while_database_full(lambda: case.call(**sent))
    case.validate_response(response, headers=sent["headers"], transport_kwargs=sent)


ingest, catalog, transfer, scheduler, monitor = (_schema(s) for s in
                                                 ("ingest", "catalog", "transfer", "scheduler", "monitor"))


@scheduler.hook("filter_failure")
def scheduler_known_failure(_context: Any, _failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure except the one test_known_failures.py tracks (a body not in UTF-8 is a 500 there).

    Dropped here so that the run goes on checking everything else; the xfail(strict=True) test fails as soon as
    the fix is merged, and then this hook must go.
    """
    return not (response.status_code == 500 and _not_utf8(case.body))


def _not_utf8(body: object) -> bool:
    if not isinstance(body, bytes):
        return False
    try:
        body.decode()
    except UnicodeDecodeError:
        return True
    return False


@ingest.parametrize()
def test_ingest_api_conforms(case: Any, api_site: BackgroundSite, http: requests.Session, caller: Role) -> None:
    conforms(case, api_site, http, "ingest", caller)


@catalog.parametrize()
def test_catalog_api_conforms(case: Any, api_site: BackgroundSite, http: requests.Session, caller: Role) -> None:
    conforms(case, api_site, http, "catalog", caller)


@transfer.parametrize()
def test_transfer_api_conforms(case: Any, api_site: BackgroundSite, http: requests.Session, caller: Role) -> None:
    conforms(case, api_site, http, "transfer", caller)


@scheduler.parametrize()
def test_scheduler_api_conforms(case: Any, api_site: BackgroundSite, http: requests.Session, caller: Role) -> None:
    conforms(case, api_site, http, "scheduler", caller)


@monitor.parametrize()
def test_monitor_api_conforms(case: Any, api_site: BackgroundSite, http: requests.Session, caller: Role) -> None:
    conforms(case, api_site, http, "monitor", caller)
