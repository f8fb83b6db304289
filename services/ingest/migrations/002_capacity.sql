-- Store capacity counted from facts: bytes minted into each store, bytes reserved by work in progress,
-- announcements waiting for room. Applied with search_path set to the ingest schema.

-- Bytes of the instances on each store, kept by the database itself (the triggers below), so no code path that
-- adds or removes an instance can forget it. Its row is also what a reservation or a mint locks (FOR UPDATE) to
-- decide, one at a time per store, whether a file still fits.
CREATE TABLE store_usage (
    store       text PRIMARY KEY,
    used_bytes  bigint NOT NULL DEFAULT 0
);
INSERT INTO store_usage (store, used_bytes) SELECT store, sum(size) FROM instances GROUP BY store;

-- Rows are changed in store order, like every other locker of store_usage, so none waits on another in a cycle.
CREATE FUNCTION count_instance_bytes() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO store_usage (store, used_bytes)
            SELECT store, sum(size) FROM added GROUP BY store ORDER BY store
            ON CONFLICT (store) DO UPDATE SET used_bytes = store_usage.used_bytes + EXCLUDED.used_bytes;
    ELSE
        INSERT INTO store_usage (store, used_bytes)
            SELECT store, -sum(size) FROM removed GROUP BY store ORDER BY store
            ON CONFLICT (store) DO UPDATE SET used_bytes = store_usage.used_bytes + EXCLUDED.used_bytes;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER instances_counted_in AFTER INSERT ON instances REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION count_instance_bytes();
CREATE TRIGGER instances_counted_out AFTER DELETE ON instances REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION count_instance_bytes();

-- An `uploads` row is a reservation of `size` bytes on `store` for as long as it exists: an HTTP upload from its
-- announcement until it is minted, its claim refused or it expires; a copy ('copy': an announced observation or a
-- local-path upload) while it is being staged. Every row now has a size and a store.
UPDATE uploads SET size = 0 WHERE size IS NULL;
ALTER TABLE uploads ALTER COLUMN size SET NOT NULL;

-- Uploads belong to their account: one pending upload per account and name. The same claim again finds it
-- (resumable); another account announcing the same file gets its own.
DELETE FROM uploads AS older USING uploads AS newer
    WHERE older.kind = 'http' AND newer.kind = 'http' AND older.uploader = newer.uploader
      AND older.name = newer.name AND (older.created_at, older.upload_id) < (newer.created_at, newer.upload_id);
DROP INDEX uploads_claim;
CREATE UNIQUE INDEX uploads_claim ON uploads (uploader, name) WHERE kind = 'http';
CREATE INDEX uploads_store ON uploads (store);

-- Announcements no store had room for: acked, recorded here with the announcement itself, and ingested by
-- themselves once room appears. A row exists exactly while its announcement is waiting; the transaction that
-- mints or refuses it deletes the row (that deletion is what makes it happen once).
CREATE TABLE waiting_announcements (
    event_id   uuid PRIMARY KEY,
    event      bytea NOT NULL,
    name       text NOT NULL,
    size       bigint NOT NULL CHECK (size >= 0),
    reason     text NOT NULL,
    since      timestamptz NOT NULL DEFAULT now(),
    tried_at   timestamptz NOT NULL DEFAULT now(),
    attempts   integer NOT NULL DEFAULT 1
);
CREATE INDEX waiting_announcements_order ON waiting_announcements (since, event_id);
