"""`obsflow search`, `obsflow locate`, `obsflow provenance`, `obsflow sessions list|show|close`, `obsflow conflicts`:
the catalog from the command line, through the Python client."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from shared.cli.commands import help_of
from shared.errors import ObsflowError

if TYPE_CHECKING:
    from shared.cli.output import Output
    from shared.client import FileProvenance

TARGETS = ("files", "observations", "sessions")
KEY_FIELD = {"files": "name", "observations": "observation_id", "sessions": "session_id"}
COLUMNS = {
    "files": ("name", "size", "file_type", "start_jd", "n_instances", "instance_sites"),
    "observations": ("observation_id", "start_jd", "session_id", "n_files"),
    "sessions": ("session_id", "status", "start_jd", "end_jd", "n_observations", "closed_at"),
}
NUMERIC = ("size", "n_instances", "n_files", "n_observations", "start_jd", "end_jd")
FILE_DETAILS = ("name", "size", "checksum", "file_type", "observation_id", "start_jd", "origin_site", "uploader",
                "created_at", "instance_sites")


class SearchUsageError(ObsflowError):
    """A command line search that cannot be built; the message says what to write."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the catalog commands."""
    search = sub.add_parser("search", help=help_of("search"), description=help_of("search"))
    search.add_argument("query", nargs="?", help='a JSON clause, e.g. \'{"size": {">": 1000}}\'')
    search.add_argument("--target", choices=TARGETS, default="files")
    search.add_argument("--name-like", metavar="PATTERN", help="the name (or id) matches this LIKE pattern")
    search.add_argument("--since", metavar="ISO|JD", help="start_jd at or after this time or Julian date")
    search.add_argument("--session", metavar="ID", help="belongs to this observing session")
    search.add_argument("--limit", type=int, default=100, help="at most this many results per page (1-10000)")
    search.add_argument("--cursor", help="the page after this cursor (a --json page's next_cursor)")
    search.add_argument("--all", action="store_true", help="every result, page after page (--limit per page)")
    search.add_argument("--json", action="store_true",
                        help="print the JSON page (with --all: one JSON result per line)")
    search.set_defaults(func=_search)
    locate = sub.add_parser("locate", help=help_of("locate"), description=help_of("locate"))
    locate.add_argument("name")
    locate.add_argument("--json", action="store_true", help="print the copies as one JSON document")
    locate.set_defaults(func=_locate)
    provenance = sub.add_parser(
        "provenance", help=help_of("provenance"),
        description="What produced a file (the pipeline job, its run and inputs, from the catalog and the "
        "scheduler) and the files produced from it (products whose job took it as an input).")
    provenance.add_argument("name")
    provenance.add_argument("--json", action="store_true", help="print the provenance as one JSON document")
    provenance.set_defaults(func=_provenance)
    sessions = sub.add_parser("sessions", help=help_of("sessions"), description=help_of("sessions"))
    ses_sub = sessions.add_subparsers(dest="sessions_command", required=True, metavar="SUBCOMMAND")
    listing = ses_sub.add_parser("list", help="the latest sessions, newest first")
    listing.add_argument("--status", choices=("open", "closed"))
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true", help="print the sessions as one JSON document")
    listing.set_defaults(func=_sessions_list)
    for name, func, help_text in (("show", _sessions_show, "one session"),
                                  ("close", _sessions_close, "close a session now (admin): its pipeline runs")):
        cmd = ses_sub.add_parser(name, help=help_text)
        cmd.add_argument("session_id")
        cmd.add_argument("--json", action="store_true", help="print the answer as one JSON document")
        cmd.set_defaults(func=func)
    conflicts = sub.add_parser(
        "conflicts", help=help_of("conflicts"),
        description="Names minted by two sites with different contents: the file this site's catalog kept (the "
        "first mint it heard of) and the other site's. Newest first.")
    conflicts.add_argument("--limit", type=int, default=100, help="at most this many (1-10000)")
    conflicts.add_argument("--json", action="store_true", help="print the conflicts as one JSON document")
    conflicts.set_defaults(func=_conflicts)


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


def _rows(results: list[Any], target: str) -> list[tuple[Any, ...]]:
    return [tuple(getattr(row, column) for column in COLUMNS[target]) for row in results]


async def _search(args: argparse.Namespace) -> int:
    from shared.cli.connect import client_for
    from shared.cli.output import Output

    query = build_query(args.target, args.query, name_like=args.name_like, since=args.since, session=args.session)
    if args.all and args.cursor:
        raise SearchUsageError("--all starts at the first page; leave out --cursor (or --all)")
    out = Output()
    async with client_for(args) as client:
        if args.all:
            results = []
            async for row in client.search_all(query, target=args.target, page_size=args.limit):
                if args.json:
                    out.json_line(row)
                else:
                    results.append(row)
            if not args.json:
                out.table(_rows(results, args.target), COLUMNS[args.target], numeric=NUMERIC)
            return 0
        page = await client.search(query, target=args.target, limit=args.limit, cursor=args.cursor)
    if args.json:
        out.json(page)
        return 0
    out.table(_rows(page.results, args.target), COLUMNS[args.target], numeric=NUMERIC)
    if page.next_cursor:
        out.note(f"(more than {args.limit} results: raise --limit, add --all, or ask for the next page with "
                 f"--cursor {page.next_cursor})")
    return 0


async def _locate(args: argparse.Namespace) -> int:
    from shared.cli.connect import client_for
    from shared.cli.output import Output

    async with client_for(args) as client:
        answer = await client.locate(args.name)
    out = Output()
    if args.json:
        out.json(answer)
    else:
        out.table([(i.site, i.store, i.path, i.verified_at, i.local) for i in answer.instances],
                  ("site", "store", "path", "verified_at", "local"),
                  empty=f"{args.name}: known, but no copy exists anywhere")
    return 0


async def _provenance(args: argparse.Namespace) -> int:
    from shared.cli.connect import client_for
    from shared.cli.output import Output

    async with client_for(args) as client:
        found = await client.provenance(args.name)
    out = Output()
    if args.json:
        out.json(found)
    else:
        print_provenance(out, found)
    return 0


def print_provenance(out: Output, found: FileProvenance) -> None:
    """The file, what produced it and what was produced from it, for a person."""
    file = found.file
    out.record({key: getattr(file, key) for key in FILE_DETAILS})
    out.line("")
    producer = found.produced_by
    if producer is None:
        out.line("produced by: no pipeline job (raw data, or uploaded without provenance)")
    else:
        job = found.job
        out.record({
            "produced by run": producer.run, "job": producer.job, "workflow": producer.workflow,
            "attempt": producer.attempt, "inputs": producer.inputs,
            "run state": found.run.state if found.run else "(not known to this site's scheduler)",
            "job log": job.attempts[-1].log_path if job and job.attempts else None,
        })
    out.line("")
    out.table([(f.name, f.file_type, (f.produced_by or {}).get("run"), f.created_at) for f in found.derived],
              ("produced from it", "file_type", "run", "created_at"), empty="produced from it: nothing yet")


async def _sessions_list(args: argparse.Namespace) -> int:
    from shared.cli.connect import client_for
    from shared.cli.output import Output

    async with client_for(args) as client:
        sessions = await client.sessions(status=args.status, limit=args.limit)
    out = Output()
    if args.json:
        out.json({"results": sessions})
    else:
        out.table(_rows(sessions, "sessions"), COLUMNS["sessions"], numeric=NUMERIC)
    return 0


async def _sessions_show(args: argparse.Namespace) -> int:
    from shared.cli.connect import client_for
    from shared.cli.output import Output

    async with client_for(args) as client:
        session = await client.session(args.session_id)
    out = Output()
    if args.json:
        out.json(session)
    else:
        out.record(session.model_dump())
    return 0


async def _sessions_close(args: argparse.Namespace) -> int:
    from shared.cli.connect import client_for
    from shared.cli.output import Output

    async with client_for(args) as client:
        answer = await client.close_session(args.session_id)
    out = Output()
    if args.json:
        out.json(answer)
    else:
        out.line(f"session {answer.session_id} closed at {answer.closed_at.isoformat(timespec='seconds')} "
                 f"({answer.files} files); its session.closed event is on its way")
    return 0


CONFLICT_COLUMNS = ("name", "kept_site", "kept_checksum", "kept_size", "other_site", "other_checksum", "other_size",
                    "seen_at")


async def _conflicts(args: argparse.Namespace) -> int:
    from shared.cli.connect import client_for
    from shared.cli.output import Output

    async with client_for(args) as client:
        conflicts = await client.conflicts(args.limit)
    out = Output()
    if args.json:
        out.json({"results": conflicts})
    else:
        out.table([tuple(getattr(c, column) for column in CONFLICT_COLUMNS) for c in conflicts], CONFLICT_COLUMNS,
                  numeric=("kept_size", "other_size"), empty="no conflicting mints: every name has one content")
    return 0
