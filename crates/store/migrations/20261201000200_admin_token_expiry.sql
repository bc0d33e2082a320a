-- Admin tokens expire. Tokens issued before expiry existed get the default lifetime from now,
-- so that an upgrade locks nobody out at once.
ALTER TABLE admin_tokens ADD COLUMN expires_at timestamptz;
UPDATE admin_tokens SET expires_at = now() + interval '90 days' WHERE expires_at IS NULL;
ALTER TABLE admin_tokens ALTER COLUMN expires_at SET NOT NULL;
-- Keyset pagination of a company's tokens.
CREATE INDEX admin_tokens_page ON admin_tokens (company_id, created_at, id);
