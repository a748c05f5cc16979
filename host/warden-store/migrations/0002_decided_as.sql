-- What an approval was based on: the approver's standing (groups, roles, as JSON text) when
-- they decided, so the run's start can ask the policy of that moment whether they are still an
-- approver of the task. NULL for decisions recorded before this migration: such a run is
-- re-checked with the approver's object id and UPN only.
ALTER TABLE warden_runs ADD COLUMN decided_as TEXT;
