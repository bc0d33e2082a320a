-- The record trail: for each event the evaluator judged, what every active workflow of the
-- record's object decided and why, so that an admin can answer "why didn't this deal count?".
-- Written in batches by the evaluator off its consume loop (diagnostics: rows may be missing
-- when the writer fell behind), kept for `trail.retention_days`.
CREATE TABLE trail_events (
    integration_id     uuid NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    event_id           text NOT NULL,
    company_id         uuid NOT NULL,
    object_type        text NOT NULL,
    record_id          text NOT NULL,
    -- created / updated / deleted, and the CRM's own name for it where it says more.
    change_type        text NOT NULL,
    source_change_type text NOT NULL,
    -- `webhook`, or `pull` for records pulled from the CRM's API (backfill, reconciliation,
    -- hydration); `delivery_id` is the CRM's own id of the delivery or the pull job's.
    source             text NOT NULL,
    crm                text NOT NULL,
    delivery_id        text NOT NULL,
    occurred_at        timestamptz,
    received_at        timestamptz,
    judged_at          timestamptz NOT NULL,
    -- matched (some workflow counted it), retracted, no_match, or unchanged (the event told
    -- nothing new: a replay or an older version).
    summary            text NOT NULL,
    -- Per workflow of the record's object: its decision, the reason code and, for a record
    -- that did not count, the failing conditions in words.
    decisions          jsonb NOT NULL,
    PRIMARY KEY (integration_id, event_id)
);
CREATE INDEX trail_events_by_record ON trail_events (integration_id, record_id, judged_at);
CREATE INDEX trail_events_recent ON trail_events (integration_id, judged_at);
-- Rows arrive in time order, so a block range index serves the daily expiry at almost no
-- cost to the writer.
CREATE INDEX trail_events_expiry ON trail_events USING brin (judged_at);

-- Messages of an integration that a consumer dead-lettered, for the trail and the page (the
-- `<topic>.dlq` topics stay the operators' source of truth).
CREATE TABLE trail_dead_letters (
    id             bigserial PRIMARY KEY,
    company_id     uuid NOT NULL,
    integration_id uuid NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    object_type    text NOT NULL,
    record_id      text NOT NULL,
    event_id       text,
    service        text NOT NULL,
    topic          text NOT NULL,
    partition      integer NOT NULL,
    "offset"       bigint NOT NULL,
    reason         text NOT NULL,
    detail         text NOT NULL,
    at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, partition, "offset")
);
CREATE INDEX trail_dead_letters_by_record ON trail_dead_letters (integration_id, record_id);
CREATE INDEX trail_dead_letters_recent ON trail_dead_letters (integration_id, at);
