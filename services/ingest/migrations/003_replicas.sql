-- Replicas: copies of files minted at another site, received over HTTP (`POST /api/v1/replicas`, then the PUT of
-- the upload) and verified against what their origin minted. Applied with search_path set to the ingest schema.

-- A pending replica is an upload of its own kind that keeps the origin's record (the ReplicaFile: size, checksum,
-- origin site, uploader, creation time, observation, produced_by): its bytes are verified against it, and the files
-- row is made from it, not from this site.
ALTER TABLE uploads DROP CONSTRAINT uploads_kind_check;
ALTER TABLE uploads ADD CONSTRAINT uploads_kind_check CHECK (kind IN ('http', 'copy', 'replica'));
ALTER TABLE uploads ADD COLUMN replica jsonb;
ALTER TABLE uploads ADD CONSTRAINT uploads_replica_kept CHECK ((kind = 'replica') = (replica IS NOT NULL));

-- One pending upload per account and name, of either kind that waits for its bytes: the same claim again finds it
-- (a retried transfer), another claim of that name by the same account replaces it.
DROP INDEX uploads_claim;
CREATE UNIQUE INDEX uploads_claim ON uploads (uploader, name) WHERE kind IN ('http', 'replica');
