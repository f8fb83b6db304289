"""The answer of every service's token endpoint."""

from __future__ import annotations

from pydantic import Field

from shared.api.base import ApiModel


class TokenIssued(ApiModel):
    """An API token traded for an account's password."""

    token: str = Field(description="send it as `Authorization: Bearer <token>`")
    account: str
    role: str
    expires_in_s: float
