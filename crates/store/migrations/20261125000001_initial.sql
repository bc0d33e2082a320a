-- crm-sync initial schema. Every row belongs to a company (DESIGN §1 rule 7): tables carry
-- company_id even where a parent implies it, so that every query can be scoped by it directly.

CREATE TABLE companies (
    id          uuid PRIMARY KEY,
    slug        text NOT NULL UNIQUE,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE integrations (
    id                   uuid PRIMARY KEY,
    company_id           uuid NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
    name                 text NOT NULL,
    crm                  text NOT NULL CHECK (crm IN ('salesforce', 'hubspot', 'pipedrive', 'dynamics', 'generic')),
    -- The CRM account this integration is bound to, e.g. a Salesforce OrganizationId.
    crm_account_id       text NOT NULL,
    auto_sync_users      boolean NOT NULL DEFAULT false,
    -- SHA-256 of the webhook token: it is only ever compared, never used again.
    webhook_token_sha256 bytea,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (company_id, name)
);

CREATE TABLE workflows (
    id             uuid PRIMARY KEY,
    company_id     uuid NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
    integration_id uuid NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    name           text NOT NULL,
    object_type    text NOT NULL,
    -- Subset of {created, updated, deleted}.
    triggers       text[] NOT NULL,
    -- The condition tree (crm-sync-workflow's model), validated before it is stored.
    conditions     jsonb NOT NULL,
    user_field     text NOT NULL,
    value_field    text,
    date_field     text,
    activity_type  text NOT NULL,
    active         boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (integration_id, name)
);
CREATE INDEX workflows_active_by_integration ON workflows (integration_id) WHERE active;

-- Evaluators keep an in-memory snapshot of the active workflows and reload it when told.
CREATE FUNCTION notify_workflows_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('crm_sync_workflows_changed', COALESCE(NEW.integration_id, OLD.integration_id)::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER workflows_changed AFTER INSERT OR UPDATE OR DELETE ON workflows
    FOR EACH ROW EXECUTE FUNCTION notify_workflows_changed();

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    company_id    uuid NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
    display_name  text NOT NULL,
    email         text,
    status        text NOT NULL CHECK (status IN ('pending', 'active')),
    -- How the account came to be: created by auto-sync, or by an admin.
    source        text NOT NULL CHECK (source IN ('auto_sync', 'manual')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- One account per email in a company: auto-sync links to it instead of creating a duplicate.
CREATE UNIQUE INDEX users_email_per_company ON users (company_id, lower(email)) WHERE email IS NOT NULL;

CREATE TABLE crm_identities (
    company_id     uuid NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
    integration_id uuid NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    crm_user_id    text NOT NULL,
    -- NULL while unmapped (auto-sync off and no admin mapping yet).
    user_id        uuid REFERENCES users(id) ON DELETE SET NULL,
    display_name   text,
    email          text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration_id, crm_user_id)
);
CREATE INDEX crm_identities_by_user ON crm_identities (user_id);

CREATE TABLE teams (
    id          uuid PRIMARY KEY,
    company_id  uuid NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (company_id, name)
);

CREATE TABLE team_memberships (
    team_id     uuid NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    company_id  uuid NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_memberships_by_user ON team_memberships (user_id);

CREATE TABLE activities (
    id              uuid PRIMARY KEY,
    company_id      uuid NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
    integration_id  uuid NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    workflow_id     uuid NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    object_type     text NOT NULL,
    record_id       text NOT NULL,
    crm_user_id     text NOT NULL,
    -- NULL = unmapped: kept for admins and attached once the CRM identity is mapped.
    user_id         uuid REFERENCES users(id) ON DELETE SET NULL,
    activity_type   text NOT NULL,
    value           numeric NOT NULL,
    activity_date   timestamptz NOT NULL,
    state           text NOT NULL CHECK (state IN ('recorded', 'retracted')),
    -- Time of the CRM change last applied: older events arriving late do not overwrite newer ones.
    last_event_at   timestamptz NOT NULL,
    last_event_id   text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workflow_id, record_id)
);
CREATE INDEX activities_unmapped ON activities (integration_id, crm_user_id) WHERE user_id IS NULL;
CREATE INDEX activities_by_user ON activities (user_id, activity_date);

-- Each record's last known owner, for deletes and partial updates that do not carry it.
CREATE TABLE record_owners (
    company_id      uuid NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
    integration_id  uuid NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    object_type     text NOT NULL,
    record_id       text NOT NULL,
    crm_user_id     text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration_id, object_type, record_id)
);

-- Events whose effects are committed, per consumer: a replay of one of them changes nothing.
CREATE TABLE processed_events (
    consumer      text NOT NULL,
    event_id      text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Transactional outbox: messages written in the same transaction as the effects they announce,
-- published after commit and deleted once Kafka acknowledged them.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    event_id    text NOT NULL,
    topic       text NOT NULL,
    message_key text NOT NULL,
    message_id  text NOT NULL,
    payload     bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_by_event ON outbox (event_id);

-- A new or removed integration changes what the evaluator must dead-letter as unknown.
CREATE FUNCTION notify_integrations_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('crm_sync_workflows_changed', COALESCE(NEW.id, OLD.id)::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER integrations_changed AFTER INSERT OR DELETE ON integrations
    FOR EACH ROW EXECUTE FUNCTION notify_integrations_changed();
