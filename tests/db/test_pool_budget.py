"""Pools sized so the site cannot exhaust PostgreSQL's max_connections: fitted at start-up, refused if too small."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
import yaml

from shared.db import create_pool
from shared.db.pool import MIN_POOL_SIZE, ConnectionBudget
from shared.errors import ConfigurationError
from shared.settings import SERVICES, Settings

SERVER = 100  # the default max_connections of PostgreSQL (and of this machine's)
SUPERUSER_RESERVED = 3
CLI = 2  # `obsflow accounts ...` (the biggest pool the CLI opens)
STAGING_LOCKS = 1  # ingest's dedicated lock connection, outside its pool
TEST_FIXTURE_POOL = 10  # tests/conftest.py's pool fixture (create_pool's default size)


def test_the_default_deployment_and_a_test_run_fit_a_server_of_100() -> None:
    s = Settings()
    budget = ConnectionBudget.from_settings(s)
    pool = budget.fit(SERVER, SUPERUSER_RESERVED)
    assert pool == s.db_pool_size and s.db_processes == len(SERVICES)
    obsflow_up = s.db_processes * pool + STAGING_LOCKS + CLI
    largest_test = len(SERVICES) * pool + STAGING_LOCKS + TEST_FIXTURE_POOL  # tests/e2e runs all five services
    assert obsflow_up + largest_test <= SERVER - SUPERUSER_RESERVED
    assert STAGING_LOCKS + CLI + largest_test <= s.db_reserved_connections  # what the reservation is for


def test_the_kubernetes_site_counts_its_replicas_and_fits_a_server_of_100() -> None:
    k8s = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
    config = next(d for d in yaml.safe_load_all((k8s / "settings.yaml").read_text()) if d["kind"] == "ConfigMap")
    replicas = sum(d["spec"]["replicas"] for d in yaml.safe_load_all((k8s / "services.yaml").read_text())
                   if d and d["kind"] == "Deployment")
    env = config["data"]
    assert int(env["OBSFLOW_DB_PROCESSES"]) == replicas
    s = Settings(db_processes=int(env["OBSFLOW_DB_PROCESSES"]),
                 db_reserved_connections=int(env["OBSFLOW_DB_RESERVED_CONNECTIONS"]))
    assert ConnectionBudget.from_settings(s).fit(SERVER, SUPERUSER_RESERVED) == s.db_pool_size
    assert replicas * (s.db_pool_size + 1) + CLI <= SERVER - SUPERUSER_RESERVED  # +1: a staging lock at most each


def test_pools_shrink_to_fit_and_refuse_below_the_minimum() -> None:
    assert ConnectionBudget(pool_size=20, processes=5, reserved=55).fit(SERVER, SUPERUSER_RESERVED) == 8
    with pytest.raises(ConfigurationError, match=r"max_connections 60 .* = 0 each.*raise the server's max_conn"):
        ConnectionBudget(pool_size=8, processes=5, reserved=55).fit(60, SUPERUSER_RESERVED)
    assert ConnectionBudget(pool_size=8, processes=5, reserved=0).fit(5 * MIN_POOL_SIZE + 3, 3) == MIN_POOL_SIZE


async def test_create_pool_reads_the_servers_max_connections(settings: Settings, drop_schemas: None) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        max_connections = int(await conn.fetchval("SHOW max_connections"))
        reserved = int(await conn.fetchval("SHOW superuser_reserved_connections"))
    finally:
        await conn.close()
    schema = settings.schema_for("test")
    tight = ConnectionBudget(pool_size=8, processes=1, reserved=max_connections - reserved - 7)
    pool = await create_pool(settings.database_url, schema, budget=tight)
    try:
        assert pool.get_max_size() == 7
    finally:
        await pool.close()
    too_tight = ConnectionBudget(pool_size=8, processes=1, reserved=max_connections - reserved - 2)
    with pytest.raises(ConfigurationError, match=f"max_connections {max_connections} "):
        await create_pool(settings.database_url, schema, budget=too_tight)
