-- The transfer service's schema: standing orders, what it knows of files and instances (from the log), and the
-- transfers that make copies appear where the orders say. Applied with search_path set to the schema.
-- Status is derived from facts (docs/transfer.md, "States"), never kept in a flag column.

-- A standing order: every file the search matches, now or later, held at this site, must get an instance at
-- `destination`. A deleted order is kept (its transfers name it) with deleted_at set.
CREATE TABLE orders (
    order_id     text PRIMARY KEY,
    label        text NOT NULL DEFAULT '',
    search       jsonb NOT NULL,
    destination  text NOT NULL,
    store        text,
    manager      text CHECK (manager IS NULL OR manager IN ('http', 'local', 'globus')),
    priority     integer NOT NULL DEFAULT 0,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    paused_at    timestamptz,
    deleted_at   timestamptz
);
CREATE INDEX orders_live ON orders (created_at) WHERE deleted_at IS NULL;

-- Every file minted anywhere that this site has heard of (file.minted of any site): what a replica claim carries.
-- By name and checksum: two sites minting one name with different content are two records (the catalog reports
-- the conflict); a copy is always sent with the record of its own content.
CREATE TABLE files (
    name      text NOT NULL,
    size      bigint NOT NULL CHECK (size >= 0),
    checksum  text NOT NULL,
    minted    jsonb NOT NULL,  -- the file.minted payload, as the origin said it
    seen_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, checksum)
);

-- Verified instances at every site (instance.created / instance.deleted of any site, this one's included).
CREATE TABLE instances (
    file_name    text NOT NULL,
    site         text NOT NULL,
    store        text NOT NULL,
    path         text NOT NULL,
    checksum     text NOT NULL,
    verified_at  timestamptz NOT NULL,
    PRIMARY KEY (site, store, path)
);
CREATE INDEX instances_file_site ON instances (file_name, site);

-- Names to evaluate against the live orders (the stream consumer records them with the event; the evaluator
-- removes them once every order has been asked).
CREATE TABLE pending_evaluations (
    file_name  text PRIMARY KEY,
    since      timestamptz NOT NULL DEFAULT now(),
    tries      integer NOT NULL DEFAULT 0,
    not_before timestamptz NOT NULL DEFAULT now()
);

-- One row per (file, destination) that an order (or a peer's forwarding request) wants. Done iff `instances`
-- holds a copy at the destination, or the destination said it holds one (delivered_at).
CREATE TABLE transfers (
    file_name        text NOT NULL,
    destination      text NOT NULL,
    order_ids        text[] NOT NULL DEFAULT '{}',
    requested_by     text,  -- a peer site that asked this one to forward the file
    priority         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    last_attempt_at  timestamptz,
    delivered_at     timestamptz,
    forwarded_at     timestamptz,  -- via a peer: when that peer accepted to send it on
    PRIMARY KEY (file_name, destination)
);
CREATE INDEX transfers_due ON transfers (next_attempt_at) WHERE delivered_at IS NULL;

-- A batch of files sent to one peer by one manager: recorded before the manager is called, so a batch cut short by
-- a crash is sent again under the same id (its journal holds what the manager submitted, e.g. a Globus task).
CREATE TABLE batches (
    batch_id    text PRIMARY KEY,
    peer        text NOT NULL,
    manager     text NOT NULL,
    journal     jsonb NOT NULL DEFAULT '{}',
    started_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz
);
CREATE INDEX batches_open ON batches (started_at) WHERE ended_at IS NULL;

-- One row per file of a batch; outcome NULL while the batch is in flight.
CREATE TABLE attempts (
    batch_id     text NOT NULL REFERENCES batches (batch_id),
    file_name    text NOT NULL,
    destination  text NOT NULL,  -- the transfer's destination (the batch's peer is the next hop)
    outcome      text CHECK (outcome IS NULL OR outcome IN ('delivered', 'already', 'failed')),
    reason       text,
    bytes        bigint NOT NULL DEFAULT 0,
    ended_at     timestamptz,
    PRIMARY KEY (batch_id, file_name, destination)
);
CREATE INDEX attempts_transfer ON attempts (file_name, destination);
