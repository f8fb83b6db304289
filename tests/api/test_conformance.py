"""schemathesis against every service's OpenAPI document, on the real running services.

Every operation is exercised from the document's examples, its coverage cases (boundaries, missing and wrong
fields, methods it does not declare) and fuzzed data, valid and invalid, as an admin and as a read-only account;
and announcements are followed by the PUT of their bytes, as the document's link says.
Every response must be no server error and conform: status code, content type, headers and body as declared,
invalid data refused with a 4xx, a declared security requirement enforced. The examples are bounded
(OBSFLOW_SCHEMATHESIS_EXAMPLES, default 12 per operation and caller) and seeded (OBSFLOW_SCHEMATHESIS_SEED), so
a run takes about a minute and a failure reproduces; set another seed to explore further.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
import xxhash
from hypothesis import strategies as st

from shared.auth import Role
from tests.api.site import BackgroundSite, retry_while_database_full

CHECKS = (
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
    "response_schema_conformance", "negative_data_rejection", "missing_required_header", "unsupported_method",
    "ignored_auth",
)
SEED = int(os.environ.get("OBSFLOW_SCHEMATHESIS_SEED", "20261130"))
EXAMPLES = int(os.environ.get("OBSFLOW_SCHEMATHESIS_EXAMPLES", "12"))
CONFIG = schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"max-examples": EXAMPLES, "mode": "all",
                   "database": "none",
                   # The token is the caller's (admin or read-only), sent with every case; ignored_auth checks that
                   # leaving it out or forging it is refused.
                   "with-security-parameters": False},
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



def test_ingest_two_phase_upload_conforms(api_site: BackgroundSite, http: requests.Session) -> None:
    """Announcements (generated from the document) followed, as the ticket's link says, by a PUT of their bytes.

    Half announce the bytes honestly (their size and xxh3-128), so the PUT mints a file; the others are refused.
    Every answer is checked like the single operations above.
    """
    sent = {"base_url": api_site.url("ingest"), "timeout": 30, "session": http,
            "headers": {"Authorization": f"Bearer {api_site.token(Role.ADMIN)}"}}
    announce, send = ingest["/api/v1/uploads"]["POST"], ingest["/api/v1/uploads/{upload_id}"]["PUT"]

    def checked(case: Any) -> Any:
        response = retry_while_database_full(lambda: case.call(**sent))
        case.validate_response(response, headers=sent["headers"], transport_kwargs=sent)
        return response

    @hypothesis.seed(SEED)
    @hypothesis.settings(max_examples=EXAMPLES * 2, deadline=None, database=None)
    @hypothesis.given(announcement=announce.as_strategy(), data=st.binary(max_size=512), honest=st.booleans())
    def upload(announcement: Any, data: bytes, honest: bool) -> None:
        if honest:
            announcement.body = {**announcement.body, "size": len(data),
                                 "checksum": f"xxh3-128:{xxhash.xxh3_128_hexdigest(data)}"}
        ticket = checked(announcement)
        if ticket.status_code == 201:
            minted = checked(send.Case(path_parameters={"upload_id": ticket.json()["upload_id"]}, body=data,
                                       media_type="application/octet-stream"))
            if honest:
                assert minted.status_code in (201, 409), minted.text  # 409: a generated name was minted already

    upload()


def test_ingest_replica_transfer_conforms(api_site: BackgroundSite, http: requests.Session) -> None:
    """Replica announcements (generated from the document) followed, as the ticket's link says, by a PUT of their bytes.

    Half carry an honest record of the bytes (their size and xxh3-128, a time with its offset), so the PUT records
    a replica of another site's file; the others are refused. Every answer is checked like the single operations.
    """
    sent = {"base_url": api_site.url("ingest"), "timeout": 30, "session": http,
            "headers": {"Authorization": f"Bearer {api_site.token(Role.ADMIN)}"}}
    announce, send = ingest["/api/v1/replicas"]["POST"], ingest["/api/v1/uploads/{upload_id}"]["PUT"]
    recorded: list[str] = []

    def checked(case: Any) -> Any:
        response = retry_while_database_full(lambda: case.call(**sent))
        case.validate_response(response, headers=sent["headers"], transport_kwargs=sent)
        return response

    @hypothesis.seed(SEED)
    @hypothesis.settings(max_examples=EXAMPLES * 2, deadline=None, database=None)
    @hypothesis.given(announcement=announce.as_strategy(), data=st.binary(max_size=512), honest=st.booleans())
    def replicate(announcement: Any, data: bytes, honest: bool) -> None:
        record = announcement.body.get("file") if isinstance(announcement.body, dict) else None
        if honest and isinstance(record, dict):
            announcement.body = {"file": {
                **record, "size": len(data), "checksum": f"xxh3-128:{xxhash.xxh3_128_hexdigest(data)}",
                "created_at": "2020-09-30T00:00:00+00:00", "origin_site": "karoo", "uploader": "correlator"}}
        ticket = checked(announcement)
        if ticket.status_code in (200, 201) and "upload_id" in ticket.json():
            replica = checked(send.Case(path_parameters={"upload_id": ticket.json()["upload_id"]}, body=data,
                                        media_type="application/octet-stream"))
            if honest:
                assert replica.status_code in (200, 201, 409), replica.text  # 409: a generated name is held already
                if replica.status_code == 201:
                    assert replica.json()["file"]["origin_site"] == "karoo", replica.text
                    recorded.append(replica.json()["file"]["name"])

    replicate()
    assert recorded, "no honest replica was recorded: the generated names never reached the happy path"
