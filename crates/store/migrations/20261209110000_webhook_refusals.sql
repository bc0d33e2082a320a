-- The last webhook request of the integration that ingest refused (a signature that does not
-- match, a malformed body, a value that cannot be stored), so that its health can
-- tell a CRM whose requests are refused from one that sends nothing.
ALTER TABLE integration_sync_status
    ADD COLUMN last_refused_webhook_at timestamptz,
    ADD COLUMN last_webhook_refusal text;
