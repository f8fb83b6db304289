-- A dead letter keeps a bounded excerpt of its body with the whole body's size and sha256: a 16 MiB bad event is not
-- stored whole. It is recorded once per consumer (the same body again counts as another occurrence).
ALTER TABLE dead_letters RENAME COLUMN body TO excerpt;
ALTER TABLE dead_letters ADD COLUMN body_bytes bigint, ADD COLUMN body_sha256 bytea,
    ADD COLUMN occurrences integer NOT NULL DEFAULT 1;
UPDATE dead_letters SET body_bytes = length(excerpt), body_sha256 = sha256(excerpt),
    excerpt = substring(excerpt FROM 1 FOR 4096);
DELETE FROM dead_letters d USING dead_letters e
    WHERE d.consumer = e.consumer AND d.body_sha256 = e.body_sha256 AND d.id > e.id;
ALTER TABLE dead_letters ALTER COLUMN body_bytes SET NOT NULL, ALTER COLUMN body_sha256 SET NOT NULL;
CREATE UNIQUE INDEX dead_letters_once ON dead_letters (consumer, body_sha256);
