-- CRM connectors: credentials that must be used again (stored encrypted), the ordering of the
-- owner memory, and the state of looking CRM users up through the CRMs' APIs.

-- One encrypted JSON document per integration (webhook signing secrets, HTTP Basic credentials,
-- webhook keys, CRM API credentials). Only the services hold the key (`secrets.encryption_key`);
-- the database never sees a secret in clear.
CREATE TABLE integration_secrets (
    integration_id uuid PRIMARY KEY REFERENCES integrations(id) ON DELETE CASCADE,
    company_id     uuid NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
    -- A fingerprint of the key that sealed the row, so a wrong key is reported as such rather
    -- than as tampering.
    key_id         text NOT NULL,
    -- XChaCha20-Poly1305 with the integration id as associated data: a ciphertext copied onto
    -- another integration's row does not decrypt.
    nonce          bytea NOT NULL,
    ciphertext     bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- When the CRM says the owner was set. ingest records the owner of every event it accepts, in
-- CRM time order; NULL for rows written before ingest kept this memory.
ALTER TABLE record_owners ADD COLUMN observed_at timestamptz;

-- Once ingest has recorded a record's owner with its CRM time, a write that changes the owner
-- without a newer CRM time (the provisioner replaying an older outcome) must not undo it.
CREATE FUNCTION record_owners_keep_newest() RETURNS trigger AS $$
BEGIN
    IF OLD.observed_at IS NOT NULL
       AND NEW.observed_at IS NOT DISTINCT FROM OLD.observed_at
       AND NEW.crm_user_id IS DISTINCT FROM OLD.crm_user_id THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER record_owners_keep_newest BEFORE UPDATE ON record_owners
    FOR EACH ROW EXECUTE FUNCTION record_owners_keep_newest();

-- Looking a CRM user's name and email up through the CRM's API. NULL: never tried. `pending`:
-- a lookup failed (CRM down, throttled) and is retried at `directory_next_attempt_at`;
-- `complete`: done; `not_found`: the CRM has no such user; `failed`: given up after many tries.
ALTER TABLE crm_identities
    ADD COLUMN directory_state text CHECK (directory_state IN ('pending', 'complete', 'not_found', 'failed')),
    ADD COLUMN directory_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN directory_next_attempt_at timestamptz,
    ADD COLUMN directory_error text;
CREATE INDEX crm_identities_directory_due ON crm_identities (directory_next_attempt_at)
    WHERE directory_state = 'pending';
