"""No traceback reaches the person: every command that cannot do its work says why in one line, `obsflow:
<message>`, and exits 2 (130 when interrupted)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from shared.bus import publish_event
from shared.cli.main import describe_failure
from shared.errors import ConfigurationError
from tests.cli.support import Ran, obsflow
from tests.foundation.support import minted
from tests.infra import free_port_block


def one_line_of_obsflow(ran: Ran) -> str:
    """The message of a refused command, checked to be one `obsflow: ...` line and exit status 2."""
    assert ran.code == 2, ran
    assert ran.no_traceback, ran.err
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("obsflow: "), ran.err
    return lines[0]


async def test_uploading_a_path_that_does_not_exist(tmp_path: Path) -> None:
    ran = await obsflow("upload", "/no/such/path", "--type", "dat", env={"HOME": str(tmp_path)})
    assert one_line_of_obsflow(ran) == ("obsflow: cannot upload /no/such/path: No such file or directory; "
                                        "check the path")


@pytest.mark.parametrize("command", [["accounts", "create", "root", "--role", "admin"], ["accounts", "token", "root"]])
async def test_accounts_without_a_terminal_say_to_use_password_stdin(command: list[str]) -> None:
    message = one_line_of_obsflow(await obsflow(*command))
    assert "no terminal to ask for the password on: send it on standard input with --password-stdin" in message
    assert "A password has 12 to 1024 characters" in message


async def test_password_stdin_with_nothing_on_it() -> None:
    ran = await obsflow("accounts", "create", "root", "--role", "admin", "--password-stdin", stdin=b"")
    assert one_line_of_obsflow(ran) == "obsflow: nothing on standard input: send the password as its first line"


async def test_the_password_rules_are_in_the_help() -> None:
    for command in (["accounts", "create", "--help"], ["accounts", "token", "--help"]):
        ran = await obsflow(*command)
        assert ran.code == 0 and "--password-stdin" in ran.out
    assert "12 to 1024 characters" in (await obsflow("accounts", "create", "--help")).out.replace("\n", " ")


async def test_a_missing_token(tmp_path: Path) -> None:
    for command in (["search"], ["workflow", "runs"], ["sessions", "list"]):
        ran = await obsflow(*command, env={"HOME": str(tmp_path), "OBSFLOW_TOKEN": ""})
        assert one_line_of_obsflow(ran).startswith("obsflow: no API token: set OBSFLOW_TOKEN")


async def test_unreachable_services(tmp_path: Path) -> None:
    config = tmp_path / "nightly.toml"
    config.write_text("[Options]\n")
    product = tmp_path / "product.dat"
    product.write_bytes(b"x")
    env = {"HOME": str(tmp_path), "OBSFLOW_TOKEN": "some-token", "OBSFLOW_HTTP_BASE_PORT": str(free_port_block()),
           "OBSFLOW_DATA_DIR": str(tmp_path / "data")}
    commands = {
        "catalog": [["search"], ["locate", "x"], ["provenance", "x"], ["sessions", "list"], ["sessions", "show", "x"],
                    ["sessions", "close", "x"], ["conflicts"]],
        "scheduler": [["workflow", "runs"], ["workflow", "status", "r"], ["workflow", "retry", "r"],
                      ["workflow", "run", "nightly", "x"], ["workflow", "register", str(config), "--on", "manual"]],
        "ingest": [["upload", str(product)]],
    }
    runs = [(service, command) for service, listed in commands.items() for command in listed]
    results = await asyncio.gather(*(obsflow(*command, env=env) for _, command in runs))
    for (service, command), ran in zip(runs, results, strict=True):
        message = one_line_of_obsflow(ran)
        assert f"cannot reach the {service} service at http://127.0.0.1:" in message, (command, message)


async def test_an_unreachable_broker(tmp_path: Path) -> None:
    ran = await obsflow("events", "tail", "#", env={"OBSFLOW_AMQP_URL": f"amqp://guest:guest@127.0.0.1:"
                                                                         f"{free_port_block()}/"})
    assert one_line_of_obsflow(ran).startswith("obsflow: cannot reach RabbitMQ:")


@pytest.mark.parametrize(("command", "problem"), [
    (["search", "{oops"], "obsflow: the query is not JSON"),
    (["search", "[1, 2]"], "obsflow: the query must be a JSON object"),
    (["workflow", "register", "x.toml", "--on", "file.minted", "--match", "{"], "obsflow: --match is not JSON"),
    (["workflow", "register", "/no/such.toml", "--on", "manual"], "obsflow: cannot read workflow config"),
    (["events", "tail", "#", "--limit", "0"], "obsflow: --limit is a number of events, 1 or more"),
    (["search", "--all", "--cursor", "abc"], "obsflow: --all starts at the first page"),
])
async def test_bad_arguments(command: list[str], problem: str, tmp_path: Path) -> None:
    ran = await obsflow(*command, env={"OBSFLOW_TOKEN": "some-token", "HOME": str(tmp_path)})
    assert one_line_of_obsflow(ran).startswith(problem)


async def test_an_unknown_command_is_argparses_usage_message() -> None:
    ran = await obsflow("serach")
    assert ran.code == 2 and ran.no_traceback and "invalid choice: 'serach'" in ran.err


def test_what_is_said_of_an_error() -> None:
    assert describe_failure(ConfigurationError("set X")) == "set X"
    assert describe_failure(FileNotFoundError(2, "No such file or directory", "/x")) == \
        "cannot use /x: No such file or directory"
    unexpected = describe_failure(RuntimeError("boom"))
    assert unexpected.startswith("unexpected RuntimeError: boom; this is a fault of obsflow")
    assert "OBSFLOW_TRACEBACK=1" in unexpected
    # Found by `make chaos`: a service starting as the broker stopped exited with "unexpected RuntimeError: <Connection
    # ...> closed; this is a fault of obsflow" (aio-pika's word for a connection the broker closed under it).
    outage = describe_failure(RuntimeError('<Connection: "amqp://karoo-ingest:******@127.0.0.1:5672/" at 0x7f> closed'))
    assert outage.startswith("a server obsflow needs went away or is restarting (RuntimeError: <Connection")
    assert "fault of obsflow" not in outage


@pytest.mark.parametrize("start", [[], ["--from", "first"]])
async def test_events_tail_stopped_by_ctrl_c_exits_130(topology, settings, amqp, start: list[str]) -> None:
    env = {"OBSFLOW_AMQP_URL": settings.amqp_url, "OBSFLOW_BUS__PREFIX": topology.prefix}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli.main", "events", "tail", "#", *start, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        # A shell's background job ignores SIGINT and its children inherit that: this one is a foreground command.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None and proc.stderr is not None
    channel = await amqp.channel()
    exchange = await channel.get_exchange(topology.events_exchange)
    try:
        async with asyncio.timeout(30):  # publish until it has subscribed and printed one
            first = asyncio.ensure_future(proc.stdout.readline())
            while not first.done():
                await publish_event(exchange, minted(1))
                await asyncio.wait([first], timeout=0.2)
        assert b"file.minted" in first.result()
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    err = (await proc.stderr.read()).decode()
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
