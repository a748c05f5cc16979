-- Fleets (issue 17): dry runs. Changes no table: `warden_fleets.dry_run` exists since 0003.
-- A release before it works a dry-run fleet's jobs as ordinary ones and sends their writes; it
-- also knows no migration 5, so once this one is recorded it refuses to open the database
-- (sqlx: an applied migration it does not know). That refusal is the point: stop every fleet,
-- worker and serve process sharing the database and upgrade them together.
SELECT 1;
