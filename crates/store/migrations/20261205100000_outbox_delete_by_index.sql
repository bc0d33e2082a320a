-- The outbox is a queue: rows are inserted and deleted within moments, so its statistics always
-- say it is empty, while its pages hold every row deleted since autovacuum last ran. Planned
-- for an empty table, `DELETE ... WHERE id = ANY(...)` scanned the whole table, dead rows
-- included, for every batch: under 1,000 events/s it was the statement the database spent the
-- most time on. The delete now runs with sequential scans off, so it reaches its rows through
-- the primary key whatever the statistics say.
CREATE FUNCTION outbox_delete(ids bigint[]) RETURNS bigint
LANGUAGE sql
SET enable_seqscan = off
AS $$
    WITH gone AS (DELETE FROM outbox WHERE id = ANY(ids) RETURNING 1)
    SELECT count(*) FROM gone
$$;
