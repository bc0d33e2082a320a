-- The provisioner is the only writer of record_owners (ingest no longer remembers owners): the
-- trigger that ordered the two writers' updates, and the CRM time only ingest wrote, go. Left in
-- place, a row ingest once wrote would keep refusing the provisioner's newer owner.
DROP TRIGGER IF EXISTS record_owners_keep_newest ON record_owners;
DROP FUNCTION IF EXISTS record_owners_keep_newest();
ALTER TABLE record_owners DROP COLUMN IF EXISTS observed_at;
