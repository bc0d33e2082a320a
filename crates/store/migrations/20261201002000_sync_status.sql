-- What an admin needs to judge whether an integration's data is flowing: when its CRM last
-- reached us, and what the latest reconciliation found. Written by ingest (webhooks, pull jobs)
-- and the evaluator (records a pull brought that the webhooks had missed); read by admin-api.
CREATE TABLE integration_sync_status (
    integration_id          uuid PRIMARY KEY REFERENCES integrations(id) ON DELETE CASCADE,
    -- Throttled by the writer: precise to a few seconds.
    last_webhook_at         timestamptz,
    last_reconciliation_at  timestamptz,
    last_reconciliation_job uuid,
    -- The last finished reconciliation's figures.
    last_reconciliation_scanned   bigint NOT NULL DEFAULT 0,
    last_reconciliation_published bigint NOT NULL DEFAULT 0,
    last_reconciliation_api_calls bigint NOT NULL DEFAULT 0,
    last_reconciliation_error     text,
    -- Pulled records that changed what the pipeline knew of a record: a webhook that never came.
    missed_webhooks_fixed   bigint NOT NULL DEFAULT 0,
    last_fixed_at           timestamptz,
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- A job's size as the CRM reported it when the job's passes began (for progress and ETA), and
-- who asked for it (an admin, the CLI, or the system on connect / on schedule).
ALTER TABLE sync_jobs ADD COLUMN records_expected bigint;
ALTER TABLE sync_jobs ADD COLUMN requested_by text NOT NULL DEFAULT 'system';
