"""JSON answers made from the API models (shared/api), so a route's body is exactly its model's shape."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel


def model_response(model: BaseModel, status: int = 200) -> web.Response:
    """`model` as an application/json response."""
    return web.Response(body=model.model_dump_json().encode(), status=status, content_type="application/json")
