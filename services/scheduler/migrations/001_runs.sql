-- Registered workflows: the config text as given (kept verbatim for provenance) and what starts a run.
CREATE TABLE workflows (
    name           text PRIMARY KEY,
    config_text    text NOT NULL,
    config_sha256  text NOT NULL,
    trigger        text NOT NULL CHECK (trigger IN ('file.minted', 'session.closed', 'manual')),
    match          jsonb,
    backend        text NOT NULL,
    registered_at  timestamptz NOT NULL DEFAULT now()
);

-- One execution of a workflow over a list of files. A duplicate trigger event starts nothing new.
CREATE TABLE runs (
    run_id            text PRIMARY KEY,
    workflow_name     text,
    trigger_event_id  uuid,
    config_text       text NOT NULL,
    config_sha256     text NOT NULL,
    backend           text NOT NULL,
    input_files       jsonb NOT NULL,
    workdir           text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    provenance        jsonb,
    UNIQUE (workflow_name, trigger_event_id)
);
CREATE INDEX runs_open ON runs (created_at) WHERE finished_at IS NULL;

-- The planned jobs of a run. `counts_from_attempt` is where the current retry round starts: job state is
-- derived from the attempts numbered from there on (a retry request moves it; nothing else does).
CREATE TABLE jobs (
    run_id               text NOT NULL REFERENCES runs ON DELETE CASCADE,
    job_key              text NOT NULL,
    position             int NOT NULL,
    action               text NOT NULL,
    primary_file         text,
    files                jsonb NOT NULL,
    args                 jsonb NOT NULL,
    prereqs              jsonb NOT NULL,
    queue                text,
    mem_mb               int NOT NULL,
    ncpu                 int NOT NULL,
    timeout_s            double precision,
    extra_batch_options  text,
    max_attempts         int NOT NULL CHECK (max_attempts >= 1),
    counts_from_attempt  int NOT NULL DEFAULT 1,
    PRIMARY KEY (run_id, job_key)
);

-- Every attempt at a job: the facts job and run status are derived from.
CREATE TABLE attempts (
    run_id        text NOT NULL,
    job_key       text NOT NULL,
    attempt       int NOT NULL,
    backend       text NOT NULL,
    external_id   text,
    state         text NOT NULL,
    exit_code     int,
    detail        text,
    host          text,
    log_path      text NOT NULL,
    submitted_at  timestamptz,
    ended_at      timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, job_key, attempt),
    FOREIGN KEY (run_id, job_key) REFERENCES jobs ON DELETE CASCADE
);
CREATE INDEX attempts_in_flight ON attempts (backend) WHERE state IN ('submitting', 'submitted', 'pending', 'running');
