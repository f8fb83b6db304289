"""Server faults the API tests found (issue 8, items 10 and 7), kept as tests that they stay fixed."""

from __future__ import annotations

import pytest
import requests
import xxhash

from shared.auth import Role
from tests.api.site import BackgroundSite


@pytest.mark.parametrize("path", ["/api/v1/workflows", "/api/v1/runs", "/api/v1/runs/nightly-1/retry"])
def test_scheduler_refuses_a_body_that_is_not_utf8_with_400(
    api_site: BackgroundSite, http: requests.Session, path: str
) -> None:
    response = http.post(
        api_site.url("scheduler") + path, data=b'{"name": "\xff\xfe"}', timeout=30,
        headers={"Authorization": f"Bearer {api_site.token(Role.ADMIN)}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"]


def test_a_zero_byte_upload_is_not_a_500(api_site: BackgroundSite, http: requests.Session) -> None:
    headers = {"Authorization": f"Bearer {api_site.token(Role.ADMIN)}"}
    announcement = {"name": "empty.flags", "type": "flags", "size": 0,
                    "checksum": f"xxh3-128:{xxhash.xxh3_128_hexdigest(b'')}"}
    ticket = http.post(api_site.url("ingest") + "/api/v1/uploads", json=announcement, headers=headers, timeout=30)
    assert ticket.status_code == 201, ticket.text
    response = http.put(api_site.url("ingest") + ticket.json()["url"], data=b"", headers=headers, timeout=30)
    assert response.status_code == 201, response.text
    assert response.json()["file"]["size"] == 0
