-- Tables every service schema has: the outbox it publishes from, the checkpoints of its stream consumers,
-- the event ids it has handled (inbox) and what it could never handle (dead letters).
CREATE TABLE outbox (
    seq          bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    routing_key  text NOT NULL,
    event_type   text NOT NULL,
    body         bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

CREATE TABLE stream_checkpoints (
    consumer   text PRIMARY KEY,
    "offset"   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE handled_events (
    consumer   text NOT NULL,
    event_id   uuid NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    consumer    text NOT NULL,
    event_id    uuid,
    routing_key text,
    reason      text NOT NULL,
    body        bytea NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
