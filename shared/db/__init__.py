"""PostgreSQL helpers: one asyncpg pool per service, pinned to the service's own schema, and migrations."""

from shared.db.migrations import apply_migrations
from shared.db.pool import create_pool
from shared.failures import translate_db_errors

__all__ = ["apply_migrations", "create_pool", "translate_db_errors"]
