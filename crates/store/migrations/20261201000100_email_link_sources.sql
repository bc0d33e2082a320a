-- Linking a CRM identity to an existing account by email is only safe when the email is the
-- CRM's own word for that user (its user directory), not something a webhook payload claims:
-- otherwise a CRM user could attach their activities to another person's account.

-- The email the CRM's user directory gives for the identity (the `email` column keeps what
-- payloads or the directory said first, for display).
ALTER TABLE crm_identities ADD COLUMN directory_email text;

-- An account auto-sync created with an email only a payload supplied: never a target for
-- linking by email (a later identity could otherwise be linked to an account an impostor made).
ALTER TABLE users ADD COLUMN email_from_payload boolean NOT NULL DEFAULT false;
