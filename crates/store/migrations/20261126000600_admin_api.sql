-- The control plane (admin-api): company-scoped bearer tokens and the audit log of every change
-- made through it, plus the indexes its paginated lists walk.

CREATE TABLE admin_tokens (
    id            uuid PRIMARY KEY,
    company_id    uuid NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
    role          text NOT NULL CHECK (role IN ('admin', 'viewer')),
    -- SHA-256 of the token's secret part: the token itself is shown once and never stored.
    token_sha256  bytea NOT NULL,
    label         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- Set to refuse the token from then on; the row stays so the audit log keeps its actor.
    revoked_at    timestamptz
);
CREATE INDEX admin_tokens_by_company ON admin_tokens (company_id);

CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    company_id   uuid NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
    token_id     uuid REFERENCES admin_tokens(id) ON DELETE SET NULL,
    -- Who, in words that survive the token: e.g. `token 1f2e… (admin, "ops laptop")` or `cli`.
    actor        text NOT NULL,
    action       text NOT NULL,
    target_type  text NOT NULL,
    target_id    text NOT NULL,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_by_company ON audit_log (company_id, id DESC);

-- Keyset pagination of the admin lists: (company, created_at, id).
CREATE INDEX integrations_page ON integrations (company_id, created_at, id);
CREATE INDEX workflows_page ON workflows (company_id, created_at, id);
CREATE INDEX users_page ON users (company_id, created_at, id);
CREATE INDEX teams_page ON teams (company_id, created_at, id);
CREATE INDEX activities_page ON activities (company_id, created_at, id);
-- Leaderboards: recorded activities of a type within a period.
CREATE INDEX activities_leaderboard ON activities (company_id, activity_type, activity_date) WHERE state = 'recorded';
