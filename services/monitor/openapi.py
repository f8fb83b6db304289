"""The OpenAPI 3.1 document of the monitor's HTTP API: the shared routes (its figures are at /metrics)."""

from __future__ import annotations

from typing import Any

from shared.http.openapi import openapi_document as shared_document


def openapi_document() -> dict[str, Any]:
    """The monitor's document: event tallies per site and type are Prometheus figures at /metrics."""
    return shared_document("monitor", "Tells operators what is happening: event tallies and ages at /metrics.", {})
