"""Bad searches are refused before any SQL runs, with the path of the offending clause and what to write."""

from __future__ import annotations

from typing import Any

import pytest

from services.catalog.search import MAX_LIMIT, SearchError, compile_search, cursor_after

ERROR_CASES: list[tuple[str, Any, str, str]] = [
    # target, query, expected path, a fragment of the message
    ("files", {"colour": {"is": "red"}}, "$.colour", "unknown clause 'colour'"),
    ("files", {"and": [{"name": {"is": "a"}}, {"nmae": {"is": "b"}}]}, "$.and[1].nmae", "known: and, or"),
    ("files", {"name; DROP TABLE files; --": {"is": "x"}}, '$["name; DROP TABLE files; --"]', "unknown clause"),
    ("files", {"size": {">": "big"}}, '$.size[">"]', "takes a whole number"),
    ("files", {"size": {">": True}}, '$.size[">"]', "got a boolean"),
    ("files", {"size": {"=": 10.5}}, '$.size["="]', "whole number"),
    ("files", {"size": {">": float("nan")}}, '$.size[">"]', "finite"),
    ("files", {"name": {"in": "nrao"}}, "$.name.in", '"in" takes a list'),
    ("files", {"name": {"in": []}}, "$.name.in", "an empty list"),
    ("files", {"name": {"in": ["a", 3]}}, "$.name.in[1]", "takes a string"),
    ("files", {"and": []}, "$.and", "at least one clause"),
    ("files", {"or": {"name": {"is": "a"}}}, "$.or", "takes a list of clauses"),
    ("files", {"none-of": []}, "$.none-of", "at least one clause"),
    ("files", {"or": [{"none-of": [{"size": {"between": [1]}}]}]}, "$.or[0].none-of[0].size.between",
     "two values"),
    ("files", {"size": {"between": [10, 1]}}, "$.size.between", "low <= high"),
    ("files", {"name": {">": "a"}}, '$.name[">"]', "unknown operator '>'"),
    ("files", {"size": {"is": 3}}, "$.size.is", "unknown operator 'is'"),
    ("files", {"name": {"is": "a"}, "size": {">": 1}}, "$", "exactly one key"),
    ("files", {"and": ["name"]}, "$.and[0]", "exactly one key"),
    ("files", {"name": "zen"}, "$.name", "takes an object of operators"),
    ("files", {"name": {}}, "$.name", "takes an object of operators"),
    ("files", {"created_at": {">": "yesterday"}}, '$.created_at[">"]', "not an ISO 8601 time"),
    ("files", {"created_at": {">": [2020]}}, '$.created_at[">"]', "an ISO time or a Julian date"),
    ("files", {"start_jd": {"<": None}}, '$.start_jd["<"]', "got null"),
    ("files", {"instance-at": 3}, "$.instance-at", "takes a site name"),
    ("files", {"observation_id": {"exists": "no"}}, "$.observation_id.exists", "true or false"),
    ("files", {"n_observations": {">": 1}}, "$.n_observations", "unknown clause"),
    ("files", {"has-file": {"size": {">": 1}}}, "$.has-file", "unknown clause"),
    ("sessions", {"status": {"is": "finished"}}, "$.status.is", "one of open, closed"),
    ("sessions", {"instance-at": "nrao"}, "$.instance-at", "unknown clause"),
    ("sessions", {"has-file": {"size": {">": "x"}}}, '$.has-file.size[">"]', "whole number"),
    ("sessions", {"has-observation": {"has-file": {"and": []}}}, "$.has-observation.has-file.and", "at least one"),
    ("observations", {"has-file": {"instances": {">=": "2"}}}, '$.has-file.instances[">="]', "whole number"),
    ("files", ["name"], "$", "a JSON object"),
]


@pytest.mark.parametrize(("target", "query", "path", "message"), ERROR_CASES,
                         ids=[f"{t}:{str(q)[:50]}" for t, q, _, _ in ERROR_CASES])
def test_bad_queries_name_the_offending_clause(target: str, query: Any, path: str, message: str) -> None:
    with pytest.raises(SearchError) as caught:
        compile_search(target, query)
    assert caught.value.field_path == path
    assert message in caught.value.message
    assert caught.value.to_dict() == {
        "error": {"code": "invalid_search", "path": path, "message": caught.value.message}}


def test_too_deep_a_query_is_refused() -> None:
    query: dict[str, Any] = {"name": {"is": "a"}}
    for _ in range(40):
        query = {"and": [query]}
    with pytest.raises(SearchError, match="too big"):
        compile_search("files", query)


@pytest.mark.parametrize(("page", "path"), [
    ({"limit": 0}, "limit"), ({"limit": MAX_LIMIT + 1}, "limit"), ({"limit": True}, "limit"),
    ({"limit": "10"}, "limit"), ({"offset": -1}, "offset"), ({"offset": 2, "cursor": "abc"}, "offset"),
    ({"cursor": "not a cursor"}, "cursor"), ({"cursor": cursor_after("sessions", {"start_jd": 1.0,
                                                                                  "session_id": "s"})}, "cursor"),
])
def test_bad_pages_are_refused(page: dict[str, Any], path: str) -> None:
    with pytest.raises(SearchError) as caught:
        compile_search("files", {}, **page)
    assert caught.value.field_path == path


def test_unknown_target_is_refused() -> None:
    with pytest.raises(SearchError, match="use one of files, observations, sessions"):
        compile_search("instances; DROP TABLE files", {})


def test_values_never_appear_in_the_sql() -> None:
    hostile = "zz'; DROP TABLE files; --"
    query = {"or": [
        {"name": {"is": hostile}}, {"name": {"in": [hostile, "b"]}}, {"uploader": {"matches": hostile}},
        {"instance-at": hostile}, {"no-instance-at": hostile}, {"size": {"between": [12345, 67890]}},
        {"created_at": {">": "2020-09-30T12:34:56Z"}},
    ]}
    sql, params = compile_search("files", query, limit=777, offset=4242)
    for forbidden in (hostile, "DROP", "12345", "67890", "777", "4242", "2020"):
        assert forbidden not in sql
    assert hostile in params and 777 in params and 4242 in params
    assert sql.count("$") == len(params)


def test_the_limit_defaults_to_100_and_the_cursor_round_trips() -> None:
    sql, params = compile_search("observations", None)
    assert params == [100] and "ORDER BY o.start_jd, o.observation_id" in sql
    cursor = cursor_after("files", {"start_jd": None, "name": "cal.fits"})
    sql, params = compile_search("files", {}, cursor=cursor)
    assert params == [float("inf"), "cal.fits", 100]
