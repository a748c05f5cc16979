-- Fleets (issue 17): the one audit summary of a fleet run. Set by the single guarded UPDATE of
-- the process that writes the summary (the one that saw the fleet's last job end), so two
-- workers never both write it; cleared when `fleet retry` queues tenants again (a new run
-- of those tenants ends with a new summary). The retry also bumps `summary_round`, and the
-- guarded UPDATE names the round its writer read: a summary of the fleet as it was before the
-- retry is refused. Additive: code before it never reads them.
ALTER TABLE warden_fleets ADD COLUMN summarised_at BIGINT;
ALTER TABLE warden_fleets ADD COLUMN summary_round BIGINT NOT NULL DEFAULT 0;
