-- At most one pending or running backfill per integration. Admin starts serialize on the
-- integration's row lock, but the backfill a replica creates when an integration gets API
-- credentials does not take it; this index makes the second of two simultaneous inserts fail
-- (the admin API answers 409, the replica skips its own), so two backfills never pull the same
-- records side by side.

-- Backfills doubled before the index existed: all but the oldest of each integration's active
-- ones are cancelled (the oldest has made the most progress).
UPDATE sync_jobs SET state = 'cancelled', cancel_requested = true, finished_at = now(),
       lease_owner = NULL, lease_expires_at = NULL, updated_at = now(),
       last_error = 'cancelled: another backfill of the integration was already active'
WHERE kind = 'backfill' AND state IN ('pending', 'running')
  AND EXISTS (SELECT 1 FROM sync_jobs older
              WHERE older.integration_id = sync_jobs.integration_id
                AND older.kind = 'backfill' AND older.state IN ('pending', 'running')
                AND (older.created_at, older.id) < (sync_jobs.created_at, sync_jobs.id));

CREATE UNIQUE INDEX sync_jobs_one_active_backfill ON sync_jobs (integration_id)
    WHERE kind = 'backfill' AND state IN ('pending', 'running');
