-- Jobs that pull from the CRMs' APIs (backfills, periodic reconciliation). A job is run by one
-- replica at a time: the replica holding an unexpired lease. Its checkpoint (where each object's
-- pass stands) is written after every published page, fenced by the lease, so that a replica
-- that was killed is resumed by another one from there.
CREATE TABLE sync_jobs (
    id                uuid PRIMARY KEY,
    company_id        uuid NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
    integration_id    uuid NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    kind              text NOT NULL CHECK (kind IN ('backfill', 'reconciliation')),
    state             text NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    -- Records modified at or after this time are pulled.
    since             timestamptz NOT NULL,
    -- The CRM objects to pull (those of the integration's workflows when the job was made).
    objects           text[] NOT NULL,
    -- Per object, the pass's cursor; absent objects have not started.
    checkpoint        jsonb NOT NULL DEFAULT '{}'::jsonb,
    lease_owner       text,
    lease_expires_at  timestamptz,
    -- Not before this time (reconciliation intervals, backoff after a failure).
    run_after         timestamptz NOT NULL DEFAULT now(),
    attempts          integer NOT NULL DEFAULT 0,
    records_scanned   bigint NOT NULL DEFAULT 0,
    records_published bigint NOT NULL DEFAULT 0,
    api_calls         bigint NOT NULL DEFAULT 0,
    last_error        text,
    cancel_requested  boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX sync_jobs_runnable ON sync_jobs (run_after) WHERE state IN ('pending', 'running');
CREATE INDEX sync_jobs_by_integration ON sync_jobs (integration_id, created_at DESC);
-- One reconciliation schedule per integration.
CREATE UNIQUE INDEX sync_jobs_one_reconciliation ON sync_jobs (integration_id)
    WHERE kind = 'reconciliation';
