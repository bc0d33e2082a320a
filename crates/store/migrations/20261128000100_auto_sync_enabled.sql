-- Turning auto_sync_users on must attach the activities already waiting unmapped at once, not at
-- each CRM user's next event (DESIGN rule 4). The provisioner owns account creation and listens
-- on this channel; notifying from a trigger makes every writer (admin-api, `crm-sync apply`)
-- notify in its own transaction, so the notification is sent if and only if the change commits.
CREATE FUNCTION notify_auto_sync_enabled() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('crm_sync_auto_sync_enabled', NEW.id::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER integrations_auto_sync_enabled_on_insert AFTER INSERT ON integrations
    FOR EACH ROW WHEN (NEW.auto_sync_users)
    EXECUTE FUNCTION notify_auto_sync_enabled();

CREATE TRIGGER integrations_auto_sync_enabled_on_update AFTER UPDATE OF auto_sync_users ON integrations
    FOR EACH ROW WHEN (NEW.auto_sync_users AND NOT OLD.auto_sync_users)
    EXECUTE FUNCTION notify_auto_sync_enabled();

-- The sweeps look for unmapped identities of auto-syncing integrations.
CREATE INDEX crm_identities_unmapped ON crm_identities (integration_id, crm_user_id) WHERE user_id IS NULL;
