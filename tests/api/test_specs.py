"""Every service serves an OpenAPI document, at both paths, that describes exactly its route table and roles."""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest
import requests
import schemathesis

from shared.auth import Role
from shared.http.openapi import SPEC_PATHS, minimum_roles
from shared.settings import SERVICES
from tests.api.site import BackgroundSite


def spec_of(service: str) -> dict[str, Any]:
    """The document `services/<service>/openapi.py` builds."""
    return importlib.import_module(f"services.{service}.openapi").openapi_document()


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_serves_its_document_without_a_token_at_both_paths(
    api_site: BackgroundSite, http: requests.Session, service: str
) -> None:
    expected = json.loads(json.dumps(spec_of(service)))
    for path in SPEC_PATHS:
        response = http.get(api_site.url(service) + path, timeout=30)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json() == expected, path
    assert expected["info"]["title"] == f"obsflow {service}"


@pytest.mark.parametrize("service", SERVICES)
def test_document_is_valid_openapi_3_1(service: str) -> None:
    schema = schemathesis.openapi.from_dict(spec_of(service))
    schema.validate()  # raises on a document that breaks the OpenAPI 3.1 meta-schema
    assert len(list(schema.get_all_operations())) == sum(len(item) for item in spec_of(service)["paths"].values())


@pytest.mark.parametrize("service", SERVICES)
def test_document_describes_exactly_the_route_table_with_the_same_minimum_roles(
    api_site: BackgroundSite, service: str
) -> None:
    served = {(r.method, r.path): (r.minimum_role.label if r.minimum_role else None)
              for r in api_site.routes(service) if r.method != "HEAD"}  # aiohttp adds HEAD to every GET
    described = minimum_roles(spec_of(service))
    assert sorted(served) == sorted(described), "routes and the document disagree on which operations exist"
    disagreements = {op: (served[op], described[op]) for op in served if served[op] != described[op]}
    assert not disagreements, f"(route table role, x-minimum-role) differ: {disagreements}"


def test_every_protected_operation_declares_401_and_its_role_and_every_body_400_and_413() -> None:
    for service in SERVICES:
        for path, item in spec_of(service)["paths"].items():
            for method, op in item.items():
                where = f"{service} {method.upper()} {path}"
                assert "401" in op["responses"], where
                if op.get("security") != []:
                    assert op["x-minimum-role"] in ("read-only", "read-append", "admin"), where
                    assert "403" in op["responses"], where
                if "requestBody" in op:
                    assert {"400", "413"} <= set(op["responses"]), where


@pytest.mark.parametrize("service", SERVICES)
def test_the_examples_name_seeded_data_so_schemathesis_checks_real_answers(
    api_site: BackgroundSite, http: requests.Session, service: str
) -> None:
    """Every GET whose path parameters have examples answers 200 with them (else only 404s would be checked)."""
    for path, item in spec_of(service)["paths"].items():
        params = [p for p in item.get("get", {}).get("parameters", []) if p["in"] == "path"]
        if not params or not all("example" in p for p in params):
            continue
        url = path.format(**{p["name"]: p["example"] for p in params})
        response = http.get(api_site.url(service) + url, timeout=30,
                                headers={"Authorization": f"Bearer {api_site.token(Role.READ_ONLY)}"})
        assert response.status_code == 200, (url, response.text)
