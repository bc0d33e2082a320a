-- The record trail in pages: one row per event (a ~1 kB row with a primary key checked on every
-- insert, three indexes and a parsed `jsonb`) cost the pipeline about as much as judging the
-- event. The evaluator now writes the entries of an integration in pages: one row holding up to
-- a few hundred entries, encoded by the evaluator (`crm_sync_store::trail::pages`), plus one
-- narrow row per record of the page so that a record's pages can be found.
--
-- A replay after a crash may write an entry twice: the readers drop repeated event ids instead
-- of the writer paying for a unique index.
CREATE TABLE trail_pages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    integration_id  uuid NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    company_id      uuid NOT NULL,
    -- The judging times of the page's first and last entries (the expiry deletes by the last).
    first_judged_at timestamptz NOT NULL,
    last_judged_at  timestamptz NOT NULL,
    -- For the integration's health: the page's entries, and those some workflow counted.
    entries         integer NOT NULL,
    matched         integer NOT NULL,
    body            bytea NOT NULL
);
-- The body is short-lived, rarely read binary: not worth compressing on every write.
ALTER TABLE trail_pages ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE INDEX trail_pages_recent ON trail_pages (integration_id, last_judged_at);

-- The pages holding a record's entries. No key and no reference to the page (both would be
-- checked per row): rows of a deleted page are ignored by the readers and deleted by the expiry
-- once every older page is gone.
CREATE TABLE trail_page_records (
    integration_id uuid NOT NULL,
    record_id      text NOT NULL,
    page_id        bigint NOT NULL
);
CREATE INDEX trail_page_records_by_record ON trail_page_records (integration_id, record_id);
-- Page ids grow with time: a block range index serves the expiry at almost no cost.
CREATE INDEX trail_page_records_expiry ON trail_page_records USING brin (page_id);

-- Entries written before stay in `trail_events` and are read with the pages until they expire.
