-- Events seen on the site's log, by origin site and type: the progress figures operators watch.
CREATE TABLE event_counts (
    site             text NOT NULL,
    event_type       text NOT NULL,
    events           bigint NOT NULL,
    last_occurred_at timestamptz NOT NULL,
    PRIMARY KEY (site, event_type)
);
