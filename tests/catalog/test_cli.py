"""`obsflow search|locate|sessions` against a running catalog, and the query the shorthand flags build."""

from __future__ import annotations

import inspect
import json

import pytest

from services.catalog.cli import SearchUsageError, build_query
from shared.auth import Role
from shared.cli.main import build_parser
from shared.client import ClientError, ServerUnavailable
from tests.catalog.catalog_harness import (
    NIGHT_1,
    NIGHT_2,
    catalog_settings,
    delete_topology,
    instance_created,
    minted,
    night,
    publish,
    running_catalog,
    token,
)


def test_shorthand_flags_are_anded_with_the_json_query() -> None:
    assert build_query("files", None) == {}
    assert build_query("files", '{"size": {">": 10}}') == {"size": {">": 10}}
    assert build_query("files", '{"size": {">": 10}}', name_like="zen.%", since="2459122.5", session="S") == {
        "and": [{"size": {">": 10}}, {"name": {"matches": "zen.%"}}, {"start_jd": {">=": 2459122.5}},
                {"session_id": {"is": "S"}}]
    }
    assert build_query("sessions", None, name_like="2459%", since="2020-09-30") == {
        "and": [{"session_id": {"matches": "2459%"}}, {"start_jd": {">=": "2020-09-30"}}]
    }
    for bad in ("{oops", "[1, 2]"):
        with pytest.raises(SearchUsageError):
            build_query("files", bad)


async def run(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()  # the in-process service logs to the same stdout: keep only the command's output
    args = build_parser(argv[0]).parse_args(list(argv))
    result = args.func(args)
    code = await result if inspect.isawaitable(result) else result
    return code, capsys.readouterr().out


async def run_with_notes(capsys, *argv: str) -> tuple[int, str, str]:
    """The command's exit code, standard output and standard error (notes for the person)."""
    capsys.readouterr()
    args = build_parser(argv[0]).parse_args(list(argv))
    code = await args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def printed_json(out: str) -> dict:
    """The JSON document the command printed (log lines of the in-process service may precede it)."""
    start = out.index("{\n") if not out.startswith("{") else 0
    return json.JSONDecoder().raw_decode(out[start:])[0]


@pytest.mark.usefixtures("drop_schemas")
async def test_cli_commands(settings, amqp, monkeypatch, capsys) -> None:
    settings = catalog_settings(settings, session_sweep_interval_s=3600)
    monkeypatch.delenv("OBSFLOW_CONFIG_FILE", raising=False)
    monkeypatch.setenv("OBSFLOW_HTTP_BASE_PORT", str(settings.http_base_port))
    monkeypatch.setenv("OBSFLOW_TOKEN", token(settings, Role.ADMIN))
    files = [minted(jd) for jd in night(NIGHT_1, 6) + night(NIGHT_2, 2)]
    name = files[0].payload.name  # type: ignore[attr-defined]
    try:
        async with running_catalog(settings) as runner:
            await publish(amqp, settings, [*files, instance_created(name, "nrao", "/data/x")])
            await runner.parts.stream_consumers[0].drain()

            code, out = await run(capsys, "search", '{"size": {">": 10}}', "--session", f"{NIGHT_1:.5f}", "--json")
            assert code == 0 and len(printed_json(out)["results"]) == 6
            code, out = await run(capsys, "search", "--name-like", "zen.%", "--since", str(NIGHT_2))
            lines = [line for line in out.splitlines() if not line.startswith("20")]  # not log lines
            assert code == 0 and lines[0].split()[:2] == ["NAME", "SIZE"] and len(lines) == 3
            code, out, err = await run_with_notes(capsys, "search", "--target", "sessions", "--limit", "1")
            assert code == 0 and f"{NIGHT_1:.5f}" in out and "more than 1 results" in err and "--cursor" in err
            cursor = err.split("--cursor ")[1].split(")")[0]
            code, out = await run(capsys, "search", "--target", "sessions", "--limit", "1", "--cursor", cursor)
            assert code == 0 and f"{NIGHT_2:.5f}" in out and f"{NIGHT_1:.5f}" not in out
            code, out = await run(capsys, "search", "--all", "--limit", "3", "--json", "--name-like", "zen.%")
            names = [json.loads(line)["name"] for line in out.splitlines() if line.startswith('{"')]
            assert code == 0 and names == sorted(f.payload.name for f in files)  # type: ignore[attr-defined]
            code, out = await run(capsys, "locate", name)
            assert code == 0 and "nrao" in out and "/data/x" in out
            code, out = await run(capsys, "sessions", "close", f"{NIGHT_1:.5f}")
            assert code == 0 and "6 files" in out
            code, out = await run(capsys, "sessions", "list", "--status", "closed", "--json")
            assert [s["session_id"] for s in printed_json(out)["results"]] == [f"{NIGHT_1:.5f}"]
            code, out = await run(capsys, "sessions", "show", f"{NIGHT_2:.5f}")
            assert code == 0 and "status" in out and "open" in out

            with pytest.raises(ClientError, match=r"at \$\.size\[\"\>\"\] \(400 invalid_search\)"):
                await run(capsys, "search", '{"size": {">": "big"}}')
            with pytest.raises(ClientError, match="already been closed|was closed"):
                await run(capsys, "sessions", "close", f"{NIGHT_1:.5f}")
            monkeypatch.setenv("OBSFLOW_TOKEN", token(settings, Role.READ_ONLY))
            with pytest.raises(ClientError, match="needs admin"):
                await run(capsys, "sessions", "close", f"{NIGHT_2:.5f}")
        with pytest.raises(ServerUnavailable, match="cannot reach the catalog service"):
            await run(capsys, "sessions", "list")
    finally:
        await delete_topology(settings)
