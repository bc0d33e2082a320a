-- The record trail stores verdict codes instead of words: the evaluator no longer words every
-- failing condition of every event (the trail's main cost on the pipeline); the admin API and
-- the CLI word them when an admin reads the trail, against the workflow as it was when the
-- event was judged.
--
-- Workflow definitions the stored verdicts refer to, by a version id derived from the workflow
-- id and its definition. `seen_at` is refreshed while the evaluator judges against the
-- version; versions are deleted a day after the trail's retention has passed them.
CREATE TABLE trail_workflow_versions (
    version        uuid PRIMARY KEY,
    workflow_id    uuid NOT NULL,
    integration_id uuid NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    company_id     uuid NOT NULL,
    spec           jsonb NOT NULL,
    seen_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trail_workflow_versions_seen ON trail_workflow_versions (seen_at);

-- New entries: `decisions` holds per workflow `{"v": version, "d": decision, "r": reason}`, and
-- `read_values` the values the workflows that did not count read (one byte saying what was
-- known of the previous values, then a protobuf crm_sync.v1.CrmEvent with only `fields` and
-- `previous_fields`). Entries written before keep their words in `decisions` and no values.
ALTER TABLE trail_events ADD COLUMN read_values bytea;
