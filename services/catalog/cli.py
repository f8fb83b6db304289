"""`obsflow search`, `obsflow locate`, `obsflow sessions list|show|close`: the catalog from the command line."""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

from services.catalog.api_client import CatalogClient, api_token, catalog_base_url
from services.catalog.cli_format import print_json, print_table
from shared.errors import ObsflowError
from shared.settings import load_settings

TARGETS = ("files", "observations", "sessions")
KEY_FIELD = {"files": "name", "observations": "observation_id", "sessions": "session_id"}
COLUMNS = {
    "files": ("name", "size", "file_type", "start_jd", "n_instances", "instance_sites"),
    "observations": ("observation_id", "start_jd", "session_id", "n_files"),
    "sessions": ("session_id", "status", "start_jd", "end_jd", "n_observations", "closed_at"),
}


class SearchUsageError(ObsflowError):
    """A command line search that cannot be built; the message says what to write."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the catalog commands."""
    search = sub.add_parser("search", help="search files, observations or sessions (docs/catalog-search.md)")
    search.add_argument("query", nargs="?", help='a JSON clause, e.g. \'{"size": {">": 1000}}\'')
    search.add_argument("--target", choices=TARGETS, default="files")
    search.add_argument("--name-like", metavar="PATTERN", help="the name (or id) matches this LIKE pattern")
    search.add_argument("--since", metavar="ISO|JD", help="start_jd at or after this time or Julian date")
    search.add_argument("--session", metavar="ID", help="belongs to this observing session")
    search.add_argument("--limit", type=int, default=100, help="at most this many results (1-10000)")
    search.add_argument("--json", action="store_true", help="print the JSON page instead of a table")
    search.set_defaults(func=_search)
    locate = sub.add_parser("locate", help="every copy of a file, at this site and the others")
    locate.add_argument("name")
    locate.add_argument("--json", action="store_true")
    locate.set_defaults(func=_locate)
    sessions = sub.add_parser("sessions", help="observing sessions: list, show, close")
    ses_sub = sessions.add_subparsers(dest="sessions_command", required=True, metavar="SUBCOMMAND")
    listing = ses_sub.add_parser("list", help="the latest sessions, newest first")
    listing.add_argument("--status", choices=("open", "closed"))
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_sessions_list)
    for name, func, help_text in (("show", _sessions_show, "one session"),
                                  ("close", _sessions_close, "close a session now (admin): its pipeline runs")):
        cmd = ses_sub.add_parser(name, help=help_text)
        cmd.add_argument("session_id")
        cmd.add_argument("--json", action="store_true")
        cmd.set_defaults(func=func)


def build_query(
    target: str, query_json: str | None, *, name_like: str | None = None, since: str | None = None,
    session: str | None = None,
) -> dict[str, Any]:
    """The search clause of the command line: the JSON query and-ed with the shorthand flags' clauses."""
    clauses: list[dict[str, Any]] = []
    if query_json:
        try:
            parsed = json.loads(query_json)
        except json.JSONDecodeError as e:
            example = '{"name": {"matches": "zen.%"}}'
            raise SearchUsageError(f"the query is not JSON ({e}); e.g. '{example}'") from e
        if not isinstance(parsed, dict):
            raise SearchUsageError("the query must be a JSON object (one clause), e.g. '{\"size\": {\">\": 1000}}'")
        if parsed:
            clauses.append(parsed)
    if name_like is not None:
        clauses.append({KEY_FIELD[target]: {"matches": name_like}})
    if since is not None:
        clauses.append({"start_jd": {">=": _time_value(since)}})
    if session is not None:
        clauses.append({"session_id": {"is": session}})
    if not clauses:
        return {}
    return clauses[0] if len(clauses) == 1 else {"and": clauses}


def _time_value(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # an ISO time: the catalog parses it and names it if it cannot


def _client(args: argparse.Namespace) -> CatalogClient:
    return CatalogClient(catalog_base_url(load_settings(args.config)), api_token())


async def _search(args: argparse.Namespace) -> int:
    query = build_query(args.target, args.query, name_like=args.name_like, since=args.since, session=args.session)
    page = await _client(args).post("/search", {"target": args.target, "query": query, "limit": args.limit})
    if args.json:
        print_json(page)
        return 0
    print_table(page["results"], COLUMNS[args.target])
    if page.get("next_cursor"):
        print(f"(more than {args.limit} results: raise --limit, or page with --json and the cursor)")
    return 0


async def _locate(args: argparse.Namespace) -> int:
    answer = await _client(args).get(f"/files/{quote(args.name, safe='')}/instances")
    if args.json:
        print_json(answer)
    elif not answer["instances"]:
        print(f"{args.name}: known, but no copy exists anywhere")
    else:
        print_table(answer["instances"], ("site", "store", "path", "verified_at", "local"))
    return 0


async def _sessions_list(args: argparse.Namespace) -> int:
    params = {"limit": str(args.limit), **({"status": args.status} if args.status else {})}
    answer = await _client(args).get("/sessions", params)
    if args.json:
        print_json(answer)
    else:
        print_table(answer["results"], COLUMNS["sessions"])
    return 0


async def _sessions_show(args: argparse.Namespace) -> int:
    session = await _client(args).get(f"/sessions/{quote(args.session_id, safe='')}")
    if args.json:
        print_json(session)
    else:
        width = max(len(k) for k in session)
        for key, value in session.items():
            print(f"{key:<{width}}  {'' if value is None else value}")
    return 0


async def _sessions_close(args: argparse.Namespace) -> int:
    answer = await _client(args).post(f"/sessions/{quote(args.session_id, safe='')}/close")
    if args.json:
        print_json(answer)
    else:
        print(f"session {answer['session_id']} closed at {answer['closed_at']} ({answer['files']} files);"
              " its session.closed event is on its way")
    return 0
