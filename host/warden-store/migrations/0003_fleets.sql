-- Fleets (issue 17): one plugin or script run once per tenant of a set. Each tenant's job is a
-- row of warden_runs (the same claims, attempts, heartbeats, may_have_written and recovery as a
-- service run), tied to its fleet by fleet_id; the service's queue never takes these rows
-- (claim_next requires fleet_id IS NULL). Portable types only, as in migration 1.
CREATE TABLE warden_fleets (
    id TEXT PRIMARY KEY,
    -- The plugin or script as given, and the SHA-256 of its bytes: a worker runs the file only
    -- when its bytes still have this digest.
    guest TEXT NOT NULL,
    guest_sha256 TEXT NOT NULL,
    -- The guest's arguments, a JSON array of strings.
    args TEXT NOT NULL,
    selector TEXT NOT NULL,
    -- Failures tolerated: one more and no new job starts. NULL: no limit.
    max_failures BIGINT,
    dry_run BOOLEAN NOT NULL DEFAULT FALSE,
    requested_by_oid TEXT NOT NULL CHECK (requested_by_oid <> ''),
    requested_by_upn TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- Set once: no job of the fleet starts after it.
    cancelled_at BIGINT
);
ALTER TABLE warden_runs ADD COLUMN fleet_id TEXT REFERENCES warden_fleets (id);
-- The tenant's profile name, and its wave (0, 1, …: a wave starts when the earlier ones ended).
ALTER TABLE warden_runs ADD COLUMN tenant TEXT;
ALTER TABLE warden_runs ADD COLUMN wave BIGINT;
CREATE INDEX warden_runs_fleet ON warden_runs (fleet_id, status, wave);
