"""The site's auth secret: guessable ones refused at start-up, a file or a generated one under an absolute data
directory, tokens from another secret explained, and the value never in a log line or a message."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from shared.auth import Principal, Role, issue_token
from shared.auth.secrets import PLACEHOLDERS, SiteSecret, generated_secret_path, load_site_secret
from shared.errors import ConfigurationError
from shared.http.auth import AUTH_SECRET, auth_middleware, requires
from shared.http.errors import error_middleware
from shared.settings import Settings, load_settings
from tests.conftest import wait_for
from tests.infra import free_port_block

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
GOOD = "k3J9-qT2v_ZxW8pL0mN4bR6cY1dF5gH7jA"


@pytest.mark.parametrize(("value", "why"), [
    ("", "0 bytes"),
    ("x" * 31, "31 bytes"),
    ("change-me-to-a-long-random-string", "placeholder"),
    ("CHANGEME" + "k3J9qT2vZxW8pL0mN4bR6cY1dF5g", "placeholder"),
    ("ab" * 20, "fewer than 8 distinct characters"),
])
def test_a_guessable_secret_is_refused_without_showing_it(value: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why) as refused:
        load_site_secret(Settings(auth_secret=value))
    message = str(refused.value)
    assert "OBSFLOW_AUTH_SECRET" in message and (not value or value not in message)


def test_every_placeholder_shipped_in_deploy_is_refused() -> None:
    shipped = []
    for path in DEPLOY.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Secret":
                shipped += [v for k, v in doc.get("stringData", {}).items() if "secret" in k.lower()]
    assert shipped, "deploy/ ships no auth secret placeholder any more: update this test"
    for value in shipped:
        assert value in PLACEHOLDERS
        with pytest.raises(ConfigurationError, match="placeholder"):
            load_site_secret(Settings(auth_secret=value))


def test_a_secret_file_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(GOOD + "\n")
    secret = load_site_secret(Settings(auth_secret_file=path))
    assert secret.value == GOOD and secret.source == f"the file {path}" and GOOD not in repr(secret)
    path.write_text("short\n")
    with pytest.raises(ConfigurationError, match=f"from the file {path} is 5 bytes"):
        load_site_secret(Settings(auth_secret_file=path))
    with pytest.raises(ConfigurationError, match="cannot read the auth secret file"):
        load_site_secret(Settings(auth_secret_file=tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="keep one of them"):
        load_site_secret(Settings(auth_secret=GOOD, auth_secret_file=path))


def test_data_dir_is_absolute_and_a_relative_one_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert Settings().data_dir == tmp_path / "xdg" / "obsflow"
    monkeypatch.setenv("OBSFLOW_DATA_DIR", "var")
    with pytest.raises(ConfigurationError, match="data_dir: .*must be an absolute path"):
        load_settings()


async def test_the_generated_secret_is_the_same_from_every_working_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSFLOW_")}
    env.update(XDG_DATA_HOME=str(tmp_path / "xdg"), OBSFLOW_SITE="karoo", PYTHONPATH=os.getcwd())
    script = ("from shared.settings import load_settings; from shared.auth.secrets import load_site_secret; "
              "s = load_site_secret(load_settings()); print(s.key_id, s.source)")
    answers = set()
    for cwd in (tmp_path / "a", tmp_path / "b" / "c"):
        cwd.mkdir(parents=True)
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=cwd, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        answers.add(out.decode().strip())
    path = tmp_path / "xdg" / "obsflow" / "karoo-auth-secret"
    assert answers == {f"{load_site_secret(Settings(data_dir=path.parent, site='karoo')).key_id} the file {path} "
                       "(generated)"}
    assert path.stat().st_mode & 0o777 == 0o600
    assert generated_secret_path(Settings(data_dir=path.parent, site="karoo")) == path


async def test_a_token_from_another_secret_names_this_services_secret_file_and_not_forgery(tmp_path: Path) -> None:
    ours = SiteSecret(GOOD, f"the file {tmp_path}/karoo-auth-secret (generated)")
    app = web.Application(middlewares=[error_middleware, auth_middleware])
    app[AUTH_SECRET] = ours

    @requires(Role.READ_ONLY)
    async def read(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_get("/read", read)
    other_data_dir = issue_token("another-data-directory-secret-0123456789", Principal("alice", Role.ADMIN), 60)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/read", headers={"Authorization": f"Bearer {other_data_dir}"})
        message = (await response.json())["error"]["message"]
    assert response.status == 401
    assert "signed with another secret" in message and "another data directory" in message
    assert f"{tmp_path}/karoo-auth-secret" in message and "forg" not in message and GOOD not in message


async def test_a_service_refuses_to_start_with_an_empty_secret_and_never_logs_a_good_one(settings: Settings,
                                                                                         tmp_path: Path) -> None:
    env = {**os.environ, "OBSFLOW_SITE": settings.site, "OBSFLOW_DATABASE_URL": settings.database_url,
           "OBSFLOW_AMQP_URL": settings.amqp_url, "OBSFLOW_BUS__PREFIX": settings.bus.prefix,
           "OBSFLOW_LOG_FORMAT": "json", "OBSFLOW_DATA_DIR": str(tmp_path), "OBSFLOW_AUTH_SECRET": ""}

    async def obsflow(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "shared.cli.main", *args, env=env,
                                                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(b"a password of some length\n"), 60)
        return proc.returncode or 0, out.decode() + err.decode()

    code, output = await obsflow("service", "monitor")
    assert code == 2 and "the auth secret from OBSFLOW_AUTH_SECRET is 0 bytes" in output, output
    code, output = await obsflow("accounts", "token", "root", "--password-stdin")
    assert code == 2 and "the auth secret from OBSFLOW_AUTH_SECRET is 0 bytes" in output, output
    env["OBSFLOW_AUTH_SECRET"] = GOOD
    code, output = await obsflow("accounts", "token", "nobody", "--password-stdin")
    assert code == 2 and "unknown account or wrong password" in output and GOOD not in output

    base = free_port_block()
    env["OBSFLOW_HTTP_BASE_PORT"] = str(base)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "shared.cli.main", "service", "monitor", env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{base + 4}"
        await wait_for(lambda: _ok(f"{url}/readyz"), timeout_s=60, poll_s=0.2)
        forged = issue_token("a-secret-that-is-not-this-sites-0123456789", Principal("x", Role.ADMIN), 60)
        for body in ({"name": "nobody", "password": GOOD}, {"name": GOOD, "password": "x"}):
            assert await _post_status(f"{url}/api/v1/tokens", body) == 401
        assert await _status(f"{url}/metrics", forged) == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = (out + err).decode()
    assert '"service_started"' in lines and '"service_stopped"' in lines
    assert GOOD not in lines  # neither at start-up nor in any request's log


async def _status(url: str, bearer: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    try:
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
            return response.status
    except aiohttp.ClientConnectionError:
        return 0


async def _ok(url: str) -> bool:
    return await _status(url) == 200


async def _post_status(url: str, body: dict) -> int:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        return response.status
