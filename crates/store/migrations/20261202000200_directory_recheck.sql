-- When the CRM's directory last answered for a CRM user (rows that exist already count from
-- now, new ones from their creation, when the account-creating lookup runs): the provisioner
-- asks again once `directory.recheck_interval_secs` has passed, so that a user deactivated in
-- the CRM later is deactivated on the platform too.
ALTER TABLE crm_identities ADD COLUMN directory_checked_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX crm_identities_recheck_due ON crm_identities (directory_checked_at)
    WHERE user_id IS NOT NULL;
