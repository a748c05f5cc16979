-- One schema for SQLite and PostgreSQL: portable types only. Ids are UUID text, times are
-- microseconds since the Unix epoch (BIGINT), JSON is text. Run statuses are the
-- `RunStatus` strings; each transition is an UPDATE guarded by the status it leaves. Every name
-- starts with `warden_`, so the store may share a PostgreSQL database with other software.
-- Never edit this file once released: sqlx refuses a database whose applied migration's checksum
-- differs (a test pins it). Changes go in a new numbered migration.
CREATE TABLE warden_runs (
    id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    parameters TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN (
        'pending-approval', 'queued', 'running', 'completed', 'failed', 'refused',
        'rejected', 'expired', 'outcome-unknown')),
    requested_by_oid TEXT NOT NULL CHECK (requested_by_oid <> ''),
    requested_by_upn TEXT NOT NULL,
    decided_by_oid TEXT,
    decided_by_upn TEXT,
    decision_comment TEXT,
    decided_at BIGINT,
    approval_expires_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    queued_at BIGINT,
    started_at BIGINT,
    finished_at BIGINT,
    -- The claim: which worker holds a running run, of which instance (the worker name up to its
    -- last `/`), and how many times the run was claimed (fences a worker whose claim was recovered).
    worker TEXT,
    instance TEXT,
    attempt BIGINT NOT NULL DEFAULT 0,
    heartbeat_at BIGINT,
    may_have_written BOOLEAN NOT NULL DEFAULT FALSE,
    results TEXT,
    error TEXT,
    -- The last log line's sequence number; bumped by each append, which only the worker holding
    -- the running run may make (claim_next never waits for a running row).
    log_seq BIGINT NOT NULL DEFAULT 0,
    -- Four eyes, in the schema too: nobody decides their own run.
    CHECK (decided_by_oid IS NULL OR decided_by_oid <> requested_by_oid)
);
CREATE INDEX warden_runs_queue ON warden_runs (status, queued_at);
CREATE INDEX warden_runs_claims ON warden_runs (status, instance, heartbeat_at);
CREATE INDEX warden_runs_requested_by ON warden_runs (requested_by_oid, created_at, id);
CREATE INDEX warden_runs_decided_by ON warden_runs (decided_by_oid, created_at, id);
CREATE INDEX warden_runs_created ON warden_runs (created_at, id);

CREATE TABLE warden_run_logs (
    run_id TEXT NOT NULL REFERENCES warden_runs (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    level TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- Session ids are bearer secrets: only their SHA-256 is stored.
CREATE TABLE warden_sessions (
    id_sha256 TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX warden_sessions_expires ON warden_sessions (expires_at);
