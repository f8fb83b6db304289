-- Two sites minted one name with different contents: the file kept (the first file.minted this catalog read) and
-- the other. Recorded once per other content (a replayed or re-delivered file.minted adds nothing), with the
-- file.conflicted event emitted in the same transaction. Not reset by a replay: a conflict noticed and announced
-- stays noticed, and a rebuild re-reading the log finds it here and emits nothing again.
CREATE TABLE conflicts (
    name            text NOT NULL,
    kept_site       text NOT NULL,
    kept_checksum   text NOT NULL,
    kept_size       bigint NOT NULL,
    other_site      text NOT NULL,
    other_checksum  text NOT NULL,
    other_size      bigint NOT NULL,
    other_event_id  uuid NOT NULL,
    event_id        uuid NOT NULL UNIQUE,  -- the file.conflicted this catalog emitted for it
    seen_at         timestamptz NOT NULL,
    PRIMARY KEY (name, other_site, other_checksum, other_size)
);
CREATE INDEX conflicts_seen ON conflicts (seen_at DESC, name);
