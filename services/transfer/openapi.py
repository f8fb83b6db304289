"""The OpenAPI 3.1 document of the transfer service's HTTP API: the shared routes only, until its own arrive."""

from __future__ import annotations

from typing import Any

from shared.http.openapi import openapi_document as shared_document


def openapi_document() -> dict[str, Any]:
    """The transfer service's document (standing orders and transfers add their paths here)."""
    return shared_document("transfer", "Makes copies appear where the standing orders say they should.", {})
