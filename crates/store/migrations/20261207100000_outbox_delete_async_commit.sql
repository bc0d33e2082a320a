-- A published message's outbox row is deleted right after Kafka acknowledged the message, in a
-- transaction of its own (the outbox's only caller runs it on its own). That commit need not
-- wait for the write-ahead log to reach the disk: should the database crash before it does,
-- the row comes back and the relay publishes the message again, which consumers deduplicate,
-- exactly as after a delete that failed. Under a steady stream every provisioner batch paid
-- one such flush besides its own transaction's.
CREATE OR REPLACE FUNCTION outbox_delete(ids bigint[]) RETURNS bigint
LANGUAGE sql
SET enable_seqscan = off
AS $$
    SELECT set_config('synchronous_commit', 'off', true);
    WITH gone AS (DELETE FROM outbox WHERE id = ANY(ids) RETURNING 1)
    SELECT count(*) FROM gone
$$;
