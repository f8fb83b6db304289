-- The catalog's read model, projected from file.minted, instance.created/deleted and the session grouping.
-- Applied with search_path set to the catalog's schema: every name here is unqualified.
-- No foreign keys between these tables on purpose: events from different sites arrive in any order
-- (an instance.created from nrao may precede the file.minted from karoo), and a read model must accept both.

-- One row per file ever minted anywhere; its metadata never changes once written.
CREATE TABLE files (
    name            text PRIMARY KEY,
    size            bigint NOT NULL CHECK (size >= 0),
    checksum        text NOT NULL CHECK (checksum LIKE 'xxh3-128:%'),
    file_type       text NOT NULL,
    observation_id  text,
    start_jd        double precision,
    duration_s      double precision CHECK (duration_s IS NULL OR duration_s >= 0),
    origin_site     text NOT NULL,
    uploader        text NOT NULL,
    created_at      timestamptz NOT NULL,
    produced_by     jsonb
);
-- Search order and keyset pagination: (start_jd, name), files without a start last.
CREATE INDEX files_search_order ON files ((COALESCE(start_jd, 'Infinity'::double precision)), name);
-- Time windows on start_jd (the order index above is on an expression and does not serve them).
CREATE INDEX files_start_jd ON files (start_jd);
-- `matches` with a literal prefix ('zen.2459122.%') becomes an index range scan.
CREATE INDEX files_name_pattern ON files (name text_pattern_ops);
CREATE INDEX files_observation ON files (observation_id) WHERE observation_id IS NOT NULL;
CREATE INDEX files_created_at ON files (created_at);
CREATE INDEX files_type ON files (file_type);
CREATE INDEX files_origin_site ON files (origin_site);

-- One row per verified copy that currently exists; instance.deleted removes the row (same key).
CREATE TABLE instances (
    file_name    text NOT NULL,
    site         text NOT NULL,
    store        text NOT NULL,
    path         text NOT NULL,
    verified_at  timestamptz NOT NULL,
    PRIMARY KEY (site, store, path)
);
-- "has an instance at site X", "number of instances": both look up by file first.
CREATE INDEX instances_file_site ON instances (file_name, site);

-- One row per observation (a correlator output); session_id is set by the session grouping.
CREATE TABLE observations (
    observation_id  text PRIMARY KEY,
    start_jd        double precision NOT NULL,
    duration_s      double precision CHECK (duration_s IS NULL OR duration_s >= 0),
    session_id      text
);
-- Search order, and the grouping's "nearest known observations around this time".
CREATE INDEX observations_start ON observations (start_jd, observation_id);
CREATE INDEX observations_session ON observations (session_id, start_jd);

-- One row per observing session. Status is derived: a session is closed iff closed_at is not null.
-- last_seen_at is when its latest observation arrived (the event's time, so that a replay reproduces it).
CREATE TABLE sessions (
    session_id      text PRIMARY KEY,
    start_jd        double precision NOT NULL,
    end_jd          double precision NOT NULL,
    n_observations  integer NOT NULL CHECK (n_observations > 0),
    last_seen_at    timestamptz NOT NULL,
    closed_at       timestamptz,
    CHECK (end_jd >= start_jd)
);
CREATE INDEX sessions_search_order ON sessions (start_jd, session_id);
CREATE INDEX sessions_end ON sessions (end_jd);
-- The quiet-period sweep looks only at open sessions.
CREATE INDEX sessions_open ON sessions (last_seen_at) WHERE closed_at IS NULL;
