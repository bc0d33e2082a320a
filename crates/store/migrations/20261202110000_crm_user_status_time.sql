-- When the CRM last said whether a CRM user is active (a directory lookup, or the CRM's own
-- user event with the time the CRM made the change): a word older than the one stored never
-- replaces it, so a user event delivered late cannot undo a newer lookup or event.
ALTER TABLE crm_identities ADD COLUMN crm_active_at timestamptz;
UPDATE crm_identities SET crm_active_at = directory_checked_at WHERE crm_active IS NOT NULL;

-- Tells the provisioners at once when a mapped CRM user becomes due for deactivation (whoever
-- wrote it: ingest recording a user event, a directory lookup, an admin mapping an identity the
-- CRM says is inactive), so that it does not wait for the directory's next round.
CREATE FUNCTION crm_identities_notify_inactive() RETURNS trigger AS $$
BEGIN
    IF NEW.crm_active = false AND NEW.crm_inactive_applied_at IS NULL AND NEW.user_id IS NOT NULL
       AND (TG_OP = 'INSERT'
            OR OLD.crm_active IS DISTINCT FROM false
            OR OLD.crm_inactive_applied_at IS NOT NULL
            OR OLD.user_id IS DISTINCT FROM NEW.user_id) THEN
        PERFORM pg_notify('crm_sync_crm_user_inactive', NEW.integration_id::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER crm_identities_inactive_notify
    AFTER INSERT OR UPDATE OF crm_active, crm_inactive_applied_at, user_id ON crm_identities
    FOR EACH ROW EXECUTE FUNCTION crm_identities_notify_inactive();

-- Turning an integration's `deactivate_with_crm` on applies what the CRM already said at once.
CREATE FUNCTION integrations_notify_deactivate_with_crm() RETURNS trigger AS $$
BEGIN
    IF NEW.deactivate_with_crm AND NOT OLD.deactivate_with_crm THEN
        PERFORM pg_notify('crm_sync_crm_user_inactive', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER integrations_deactivate_with_crm_notify
    AFTER UPDATE OF deactivate_with_crm ON integrations
    FOR EACH ROW EXECUTE FUNCTION integrations_notify_deactivate_with_crm();
