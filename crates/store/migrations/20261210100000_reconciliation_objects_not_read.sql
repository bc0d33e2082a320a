-- The objects the last reconciliation could not read while it reconciled the others (the CRM
-- refused them: a field or object the API user may not read), each with the CRM's answer, as
-- [{"object": …, "error": …}]. Kept apart from last_reconciliation_error, which now says only why
-- a run failed as a whole, so that the sync status does not blame the whole run for one object.
ALTER TABLE integration_sync_status
    ADD COLUMN last_reconciliation_objects_not_read jsonb NOT NULL DEFAULT '[]';
