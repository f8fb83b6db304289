"""Accounts, roles and API tokens.

Passwords are hashed with argon2id and checked once, when a client asks for a token. The token is
HMAC-SHA256-signed (site secret `OBSFLOW_AUTH_SECRET`), so every request is checked in microseconds without the
database: the SO Librarian's argon2 check on every request is what caps it at ~3 files/s.
"""

from shared.auth.roles import Principal, Role
from shared.auth.tokens import TokenError, issue_token, verify_token

__all__ = ["Principal", "Role", "TokenError", "issue_token", "verify_token"]
