-- Instances removed, remembered so that an instance.created delivered after its instance.deleted (events of
-- one site can reach another out of order after a link outage) does not bring the copy back.
-- A copy verified after the removal (the same path reused for a new copy) is a new instance and is kept.
CREATE TABLE instance_tombstones (
    site        text NOT NULL,
    store       text NOT NULL,
    path        text NOT NULL,
    file_name   text NOT NULL,
    deleted_at  timestamptz NOT NULL,
    PRIMARY KEY (site, store, path)
);
