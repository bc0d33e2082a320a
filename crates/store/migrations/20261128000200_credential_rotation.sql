-- Admins rotate integration credentials through admin-api and see when each part (webhook
-- secret, basic auth, webhook key, API credentials) was last changed, never its value: the times
-- are kept in clear beside the sealed document, keyed by part name.
ALTER TABLE integration_secrets ADD COLUMN rotated_at jsonb NOT NULL DEFAULT '{}'::jsonb;
