"""Setting a site up: passwords, database roles and schemas, broker users, permissions and topology. Idempotent."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from shared.bus.peers import outbound_queue, peer_links, read_peer_passwords, waiting_peers
from shared.bus.topology import Topology, WorkQueue
from shared.credentials import database_role, database_url, ensure_password
from shared.db import apply_migrations, create_pool
from shared.db.pool import translate_db_errors
from shared.errors import ConfigurationError
from shared.provision.broker import BrokerApi, broker_definitions, import_definitions, post_definitions, vhost_of
from shared.provision.database import admin_url_for, ensure_role_and_schema, grant_reading
from shared.provision.grants import broker_grants, peer_grants
from shared.provision.shovels import apply_links, apply_links_through_api, shovel_parameters
from shared.settings import SERVICES, Settings

log = structlog.get_logger()

ACCOUNTS = "accounts"
ACCOUNTS_MIGRATIONS = "shared.auth.migrations"
DATABASE_PRINCIPALS = (*SERVICES, ACCOUNTS)


@dataclass(frozen=True)
class SetupReport:
    """What `setup_site` did, for the command's output."""

    roles: tuple[str, ...]
    broker_users: tuple[str, ...]
    definitions_file: Path | None
    shovels: tuple[str, ...] = ()
    removed_shovels: tuple[str, ...] = ()
    waiting_peers: tuple[str, ...] = ()  # declared with a broker URL, but no password handed over yet
    revoked_peer_users: tuple[str, ...] = ()  # inbound users of peers no longer declared (rabbitmqctl only)


def site_work_queues() -> tuple[WorkQueue, ...]:
    """Every service's work queues (the topology `obsflow setup` declares for all of them)."""
    from shared.runner import load_spec  # the services' specs: imported only when a site is set up

    return tuple(q for name in SERVICES for q in load_spec(name).work_queues)


async def setup_site(
    settings: Settings, *, admin_database_url: str | None = None, definitions_file: Path | None = None,
    broker_api: BrokerApi | None = None,
) -> SetupReport:
    """Create or update every principal's credentials, roles, broker users and the site's topology."""
    await setup_database(settings, admin_database_url or admin_url_for(settings.database_url))
    grants = [*broker_grants(settings.site, settings.bus.prefix),
              *peer_grants(settings.bus.prefix, [p.name for p in settings.peers])]
    passwords = {g.principal: ensure_password(settings, g.principal, "amqp") for g in grants}
    topology = Topology.from_settings(settings.bus, site_work_queues())
    peer_passwords = read_peer_passwords(settings)
    links = peer_links(settings, peer_passwords)
    waiting = tuple(p.name for p in waiting_peers(settings, peer_passwords))
    outbound = [outbound_queue(settings, p.name) for p in settings.peers if p.amqp_url is not None]
    definitions = broker_definitions(settings, topology, grants, passwords, outbound)
    vhost, prefix = vhost_of(settings.amqp_url), settings.bus.prefix
    shovels = tuple(link.shovel for link in links)
    removed: tuple[str, ...] = ()
    revoked: tuple[str, ...] = ()
    if definitions_file is not None:
        _write_secret(definitions_file, definitions)
        if links:  # loaded after the first: a shovel started before its queue exists would declare it classic
            _write_secret(shovels_file(definitions_file), shovel_parameters(links))
    elif broker_api is not None:
        await post_definitions(broker_api, definitions)
        removed = (await apply_links_through_api(broker_api, links, vhost, prefix)).removed
    else:
        await import_definitions(definitions)
        applied = await apply_links(links, vhost, prefix, [p.name for p in settings.peers])
        removed, revoked = applied.removed, applied.revoked
    users = tuple(u["name"] for u in definitions["users"])
    log.info("site_set_up", roles=list(DATABASE_PRINCIPALS), broker_users=list(users),
             peer_links=[link.described() for link in links], removed_shovels=list(removed),
             links_waiting_for_a_password=list(waiting), peer_users_revoked=list(revoked))
    return SetupReport(tuple(database_role(settings, p) for p in DATABASE_PRINCIPALS), users, definitions_file,
                       shovels, removed, waiting, revoked)


def shovels_file(definitions_file: Path) -> Path:
    """Where `--broker-definitions FILE` puts the shovels, to be loaded after FILE."""
    return definitions_file.with_name(definitions_file.name + ".shovels.json")


def _write_secret(path: Path, document: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(document, f, indent=1)


async def setup_database(settings: Settings, admin_url: str) -> None:
    """Roles and schemas for every service and the accounts, the accounts tables, and who may read them."""
    try:
        with translate_db_errors():
            admin = await asyncpg.connect(admin_url)
    except asyncpg.InvalidAuthorizationSpecificationError as e:
        raise ConfigurationError(f"cannot set up the database as its administrator: {e}; "
                                 "give an administrator's URL with --admin-database-url") from e
    try:
        for principal in DATABASE_PRINCIPALS:
            await ensure_role_and_schema(admin, database_role(settings, principal),
                                         ensure_password(settings, principal, "postgres"))
    finally:
        await admin.close()
    # The accounts tables belong to the accounts role: create them as it, then let each service read them.
    accounts_schema = settings.schema_for(ACCOUNTS)
    pool = await create_pool(database_url(settings, ACCOUNTS), accounts_schema, max_size=1)
    try:
        await apply_migrations(pool, accounts_schema, [ACCOUNTS_MIGRATIONS])
        tables = [r["tablename"] for r in await pool.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1", accounts_schema)]
    finally:
        await pool.close()
    admin = await asyncpg.connect(admin_url)
    try:
        await grant_reading(admin, accounts_schema, [database_role(settings, s) for s in SERVICES], tables)
    finally:
        await admin.close()
