-- Integrations deleted, kept after their rows are gone: the evaluator forgets the record state
-- of exactly these. Forgetting every integration it cannot find instead would wipe the whole
-- changelog the day a replica is pointed at the wrong (or a freshly restored, empty) database.
CREATE TABLE deleted_integrations (
    id         uuid PRIMARY KEY,
    company_id uuid NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
