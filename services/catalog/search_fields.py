"""The fixed vocabulary of catalog searches: every SQL identifier a search can produce is written here.

Aliases are fixed per table (files f, observations o, sessions s, instances i, and fo for the observation
of a file), which is safe because a search only nests downwards (sessions → observations → files →
instances), so no table appears twice in one chain of subqueries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.catalog.search_values import FieldKind


@dataclass(frozen=True)
class Field:
    """A searchable field: its name in queries, its SQL expression, its kind and allowed values."""

    name: str
    sql: str
    kind: FieldKind
    choices: tuple[str, ...] = ()
    via: str = ""  # for a field of a related row: EXISTS (...) with {condition} on `sql`
    via_lookup: str = ""  # the same for `is` and `in`, as a look-up evaluated once (selective, indexed)


@dataclass(frozen=True)
class Relation:
    """A clause that holds when a related row of another target matches a sub-clause (SQL EXISTS)."""

    keyword: str
    target: str
    exists_sql: str  # with {condition} where the sub-clause's SQL goes
    description: str


@dataclass(frozen=True)
class Target:
    """What a search can return: its table, result columns, order (keyset) and vocabulary."""

    name: str
    from_sql: str
    columns: str
    order_keys: tuple[str, str]
    order_kinds: tuple[FieldKind, FieldKind]
    cursor_columns: tuple[str, str]  # the result columns that hold the order keys
    fields: Mapping[str, Field]
    relations: Mapping[str, Relation] = field(default_factory=dict)
    site_clauses: bool = False


def _by_name(*fields: Field) -> dict[str, Field]:
    return {f.name: f for f in fields}


TEXT, INTEGER, REAL = FieldKind.TEXT, FieldKind.INTEGER, FieldKind.REAL
TIMESTAMP, JULIAN_DATE = FieldKind.TIMESTAMP, FieldKind.JULIAN_DATE

INSTANCE_COUNT_SQL = "(SELECT count(*) FROM instances i WHERE i.file_name = f.name)"
# A product's inputs (produced_by.inputs: paths or names, as the job was given them), by file name. produced_by is
# free-form for uploads outside a job, so anything but an array of inputs has none.
PRODUCT_INPUTS_SQL = (
    "EXISTS (SELECT 1 FROM jsonb_array_elements_text(CASE WHEN jsonb_typeof(f.produced_by->'inputs') = 'array'"
    " THEN f.produced_by->'inputs' END) AS pi(input) WHERE {condition})"
)
INSTANCE_AT_SQL = "EXISTS (SELECT 1 FROM instances i WHERE i.file_name = f.name AND i.site = {site})"

FILE_FIELDS = _by_name(
    Field("name", "f.name", TEXT),
    Field("size", "f.size", INTEGER),
    Field("checksum", "f.checksum", TEXT),
    Field("file_type", "f.file_type", TEXT),
    Field("observation_id", "f.observation_id", TEXT),
    Field(
        "session_id", "fo.session_id", TEXT,
        via="EXISTS (SELECT 1 FROM observations fo WHERE fo.observation_id = f.observation_id AND {condition})",
        # "the files of session X" must not walk every file in time order looking for X's few thousand.
        via_lookup="f.observation_id = ANY(ARRAY(SELECT fo.observation_id FROM observations fo WHERE {condition}))",
    ),
    Field("start_jd", "f.start_jd", JULIAN_DATE),
    Field("duration_s", "f.duration_s", REAL),
    Field("origin_site", "f.origin_site", TEXT),
    Field("uploader", "f.uploader", TEXT),
    Field("created_at", "f.created_at", TIMESTAMP),
    Field("instances", INSTANCE_COUNT_SQL, INTEGER),
    Field("produced_by_run", "(f.produced_by->>'run')", TEXT),
    Field("derived_from", "regexp_replace(pi.input, '^.*/', '')", TEXT, via=PRODUCT_INPUTS_SQL),
)

OBSERVATION_FIELDS = _by_name(
    Field("observation_id", "o.observation_id", TEXT),
    Field("start_jd", "o.start_jd", JULIAN_DATE),
    Field("duration_s", "o.duration_s", REAL),
    Field("session_id", "o.session_id", TEXT),
    Field("files", "(SELECT count(*) FROM files f WHERE f.observation_id = o.observation_id)", INTEGER),
)

SESSION_FIELDS = _by_name(
    Field("session_id", "s.session_id", TEXT),
    Field("start_jd", "s.start_jd", JULIAN_DATE),
    Field("end_jd", "s.end_jd", JULIAN_DATE),
    Field("n_observations", "s.n_observations", INTEGER),
    Field("last_seen_at", "s.last_seen_at", TIMESTAMP),
    Field("closed_at", "s.closed_at", TIMESTAMP),
    Field("status", "(CASE WHEN s.closed_at IS NULL THEN 'open' ELSE 'closed' END)", TEXT, ("open", "closed")),
)

FILES_ORDER = "COALESCE(f.start_jd, 'Infinity'::float8)"

TARGETS: dict[str, Target] = {
    "files": Target(
        name="files",
        from_sql="files f",
        columns=(
            "f.name, f.size, f.checksum, f.file_type, f.observation_id, f.start_jd, f.duration_s,"
            " f.origin_site, f.uploader, f.created_at, f.produced_by,"
            f" {INSTANCE_COUNT_SQL} AS n_instances,"
            " ARRAY(SELECT DISTINCT i.site FROM instances i WHERE i.file_name = f.name ORDER BY i.site)"
            " AS instance_sites"
        ),
        order_keys=(FILES_ORDER, "f.name"),
        order_kinds=(JULIAN_DATE, TEXT),
        cursor_columns=("start_jd", "name"),
        fields=FILE_FIELDS,
        site_clauses=True,
    ),
    "observations": Target(
        name="observations",
        from_sql="observations o",
        columns=(
            "o.observation_id, o.start_jd, o.duration_s, o.session_id,"
            f" {OBSERVATION_FIELDS['files'].sql} AS n_files"
        ),
        order_keys=("o.start_jd", "o.observation_id"),
        order_kinds=(JULIAN_DATE, TEXT),
        cursor_columns=("start_jd", "observation_id"),
        fields=OBSERVATION_FIELDS,
        relations={
            "has-file": Relation(
                "has-file", "files",
                "EXISTS (SELECT 1 FROM files f WHERE f.observation_id = o.observation_id AND {condition})",
                "a file of the observation matches the clause",
            ),
        },
    ),
    "sessions": Target(
        name="sessions",
        from_sql="sessions s",
        columns=(
            "s.session_id, s.start_jd, s.end_jd, s.n_observations, s.last_seen_at, s.closed_at,"
            f" {SESSION_FIELDS['status'].sql} AS status"
        ),
        order_keys=("s.start_jd", "s.session_id"),
        order_kinds=(JULIAN_DATE, TEXT),
        cursor_columns=("start_jd", "session_id"),
        fields=SESSION_FIELDS,
        relations={
            "has-observation": Relation(
                "has-observation", "observations",
                "EXISTS (SELECT 1 FROM observations o WHERE o.session_id = s.session_id AND {condition})",
                "an observation of the session matches the clause",
            ),
            "has-file": Relation(
                "has-file", "files",
                "EXISTS (SELECT 1 FROM observations o JOIN files f ON f.observation_id = o.observation_id"
                " WHERE o.session_id = s.session_id AND {condition})",
                "a file of the session matches the clause",
            ),
        },
    ),
}
