-- The people lifecycle: admins deactivate and reactivate users, merge a duplicate into the
-- account they keep, and unmap a CRM identity; a CRM that says its user is inactive deactivates
-- the platform user too (per integration, on unless turned off).

-- Set while the user is deactivated: off leaderboards, activities not visible. `status` keeps
-- whether the user was placed on a team, so reactivating restores what was.
ALTER TABLE users ADD COLUMN deactivated_at timestamptz;
-- Why: `admin` (by hand) or `crm` (the CRM said the user is inactive).
ALTER TABLE users ADD COLUMN deactivated_by text CHECK (deactivated_by IN ('admin', 'crm'));

-- An identity an admin unmapped: auto-sync must not create or link an account for it again, its
-- activities wait unmapped until an admin maps it.
ALTER TABLE crm_identities ADD COLUMN unmapped_at timestamptz;
-- What the CRM's directory last said: false when the CRM user is inactive. Once the platform
-- user was deactivated for it, `crm_inactive_applied_at` is set, so that an admin who
-- reactivates the user is not overruled until the CRM says so again.
ALTER TABLE crm_identities ADD COLUMN crm_active boolean;
ALTER TABLE crm_identities ADD COLUMN crm_inactive_applied_at timestamptz;
CREATE INDEX crm_identities_crm_inactive ON crm_identities (integration_id)
    WHERE crm_active = false AND crm_inactive_applied_at IS NULL;

-- Deactivate the platform user when the CRM says its user is inactive.
ALTER TABLE integrations ADD COLUMN deactivate_with_crm boolean NOT NULL DEFAULT true;
