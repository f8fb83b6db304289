"""The client trades an account's password for a token, as `obsflow accounts token` does."""

from __future__ import annotations

import pytest

from shared.auth import Role
from shared.auth.accounts import open_accounts
from shared.client import ClientError, ObsflowClient
from tests.client.site import ClientSite

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_a_password_becomes_a_token_that_works(client_site: ClientSite) -> None:
    async with open_accounts(client_site.settings) as accounts:
        await accounts.create("carol", "a long enough password", Role.READ_ONLY)
    async with ObsflowClient(client_site.site, None) as anonymous:
        issued = await anonymous.issue_token("carol", "a long enough password")
        assert (issued.account, issued.role) == ("carol", "read-only") and issued.expires_in_s > 0
        with pytest.raises(ClientError) as wrong:
            await anonymous.issue_token("carol", "not the password")
        assert (wrong.value.status, wrong.value.code) == (401, "unauthenticated")
    async with ObsflowClient(client_site.site, issued.token) as carol:
        assert isinstance(await carol.sessions(), list)
