-- The ingest service's state at one site: minted files, their local instances, uploads in progress.
-- Applied with search_path set to the ingest schema: every name here is unqualified.

-- One row per file minted at this site; the unique name is what makes minting safe under concurrency.
CREATE TABLE files (
    name            text PRIMARY KEY,
    size            bigint NOT NULL CHECK (size >= 0),
    checksum        text NOT NULL CHECK (checksum LIKE 'xxh3-128:%'),
    md5             text CHECK (md5 IS NULL OR md5 LIKE 'md5:%'),
    file_type       text NOT NULL,
    is_directory    boolean NOT NULL DEFAULT false,
    observation_id  text,
    start_jd        double precision,
    duration_s      double precision,
    origin_site     text NOT NULL,
    uploader        text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    metadata        jsonb
);

-- One row per verified copy on one of this site's stores.
CREATE TABLE instances (
    file_name    text NOT NULL REFERENCES files (name),
    store        text NOT NULL,
    path         text NOT NULL,
    size         bigint NOT NULL CHECK (size >= 0),
    verified_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store, path)
);
CREATE INDEX instances_file ON instances (file_name);

-- Bytes being staged: an HTTP upload announced but not yet committed, or a copy in progress.
-- The start-up sweep keeps exactly the staged entries named by these rows.
CREATE TABLE uploads (
    upload_id   text PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('http', 'copy')),
    name        text NOT NULL,
    size        bigint CHECK (size IS NULL OR size >= 0),
    checksum    text,
    file_type   text NOT NULL,
    store       text NOT NULL,
    uploader    text NOT NULL,
    metadata    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
-- Announcing the same (name, size, checksum) again finds the pending upload (resumable announcement).
CREATE UNIQUE INDEX uploads_claim ON uploads (name, size, checksum) WHERE kind = 'http';
CREATE INDEX uploads_expiry ON uploads (expires_at);
