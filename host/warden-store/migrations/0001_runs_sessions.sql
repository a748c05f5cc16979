-- One schema for SQLite and PostgreSQL: portable types only. Ids are UUID text, times are
-- microseconds since the Unix epoch (BIGINT), JSON is text. Run statuses are the
-- `RunStatus` strings; each transition is an UPDATE guarded by the status it leaves.
CREATE TABLE runs (
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
    worker TEXT,
    may_have_written BOOLEAN NOT NULL DEFAULT FALSE,
    results TEXT,
    error TEXT,
    -- The last log line's sequence number; bumped under the row's lock by each append.
    log_seq BIGINT NOT NULL DEFAULT 0,
    -- Four eyes, in the schema too: nobody decides their own run.
    CHECK (decided_by_oid IS NULL OR decided_by_oid <> requested_by_oid)
);
CREATE INDEX runs_queue ON runs (status, queued_at);
CREATE INDEX runs_requested_by ON runs (requested_by_oid, created_at);
CREATE INDEX runs_decided_by ON runs (decided_by_oid, created_at);
CREATE INDEX runs_created ON runs (created_at);

CREATE TABLE run_logs (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    level TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- Session ids are bearer secrets: only their SHA-256 is stored.
CREATE TABLE sessions (
    id_sha256 TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires_at);
