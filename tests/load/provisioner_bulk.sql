-- One 64-outcome batch of the provisioner's writes, done set-based, as a pgbench transaction
-- (tests/load/provisioner_bulk.sh). The outcomes are those of tests/load/evaluator.sh: 10
-- workflows on one object, 50,000 records, 500 owners, :matched_pct % of outcomes matched and
-- the rest retractions. Batch :b covers outcomes 64 * b .. 64 * b + 63, so every transaction
-- writes new deduplication rows, like a provisioner draining a backlog.
SELECT nextval('bulk_batch') AS b \gset
BEGIN;
-- 1. Deduplication rows.
INSERT INTO processed_events (consumer, event_id)
SELECT 'bulk', 'bulk-' || n FROM generate_series(64 * :b, 64 * :b + 63) AS n
ON CONFLICT DO NOTHING;
-- The batch's outcomes, as the provisioner holds them in memory after decoding.
CREATE TEMP TABLE IF NOT EXISTS batch (
    n bigint, matched boolean, workflow_id uuid, record_id text, crm_user_id text,
    activity_type text, value numeric, activity_date timestamptz, occurred_at timestamptz
) ON COMMIT DELETE ROWS;
INSERT INTO batch
SELECT n, (n * 7) % 100 < :matched_pct, w.id, '006LOAD' || lpad(((n / 10) % 50000)::text, 11, '0'),
       '005LOAD' || lpad(((n / 10) % 500)::text, 5, '0'), w.activity_type, 500 + (n * 37) % 200000,
       timestamptz '2026-11-01' + make_interval(days => (n % 28)::int), now()
FROM generate_series(64 * :b, 64 * :b + 63) AS n
JOIN bulk_workflows w ON w.slot = n % 10;
-- 2. Identities of the matched outcomes' owners (one look-up and insert of the missing ones).
INSERT INTO crm_identities (company_id, integration_id, crm_user_id)
SELECT DISTINCT (SELECT company_id FROM bulk_tenant), (SELECT integration_id FROM bulk_tenant), crm_user_id FROM batch WHERE matched
ON CONFLICT DO NOTHING;
-- 3. Owner memory, written only where it changes.
INSERT INTO record_owners (company_id, integration_id, object_type, record_id, crm_user_id)
SELECT DISTINCT ON (record_id) (SELECT company_id FROM bulk_tenant), (SELECT integration_id FROM bulk_tenant), 'Opportunity', record_id, crm_user_id
FROM batch WHERE matched ORDER BY record_id, n DESC
ON CONFLICT (integration_id, object_type, record_id) DO UPDATE
    SET crm_user_id = EXCLUDED.crm_user_id, updated_at = now()
    WHERE record_owners.crm_user_id <> EXCLUDED.crm_user_id;
-- 4. Activities of the matched outcomes, attributed to the identity's user (NULL: unmapped).
INSERT INTO activities (id, company_id, integration_id, workflow_id, object_type, record_id,
                        crm_user_id, user_id, activity_type, value, activity_date, state,
                        last_event_at, last_event_id)
SELECT DISTINCT ON (b.workflow_id, b.record_id)
       md5(b.workflow_id::text || b.record_id)::uuid, (SELECT company_id FROM bulk_tenant), (SELECT integration_id FROM bulk_tenant),
       b.workflow_id, 'Opportunity', b.record_id, b.crm_user_id, ci.user_id, b.activity_type,
       b.value, b.activity_date, 'recorded', b.occurred_at, 'bulk-' || b.n
FROM batch b
JOIN crm_identities ci ON ci.integration_id = (SELECT integration_id FROM bulk_tenant) AND ci.crm_user_id = b.crm_user_id
WHERE b.matched ORDER BY b.workflow_id, b.record_id, b.n DESC
ON CONFLICT (workflow_id, record_id) DO UPDATE SET
    crm_user_id = EXCLUDED.crm_user_id, user_id = EXCLUDED.user_id, value = EXCLUDED.value,
    activity_date = EXCLUDED.activity_date, state = 'recorded',
    last_event_at = EXCLUDED.last_event_at, last_event_id = EXCLUDED.last_event_id, updated_at = now()
WHERE activities.last_event_at <= EXCLUDED.last_event_at;
-- 5. Retractions.
UPDATE activities a SET state = 'retracted', last_event_at = b.occurred_at,
       last_event_id = 'bulk-' || b.n, updated_at = now()
FROM batch b
WHERE NOT b.matched AND a.workflow_id = b.workflow_id AND a.record_id = b.record_id
  AND a.last_event_at <= b.occurred_at;
-- 6. An ActivityChanged (about 300 bytes) in the outbox for every matched outcome of a mapped user.
INSERT INTO outbox (event_id, topic, message_key, message_id, payload)
SELECT 'bulk-' || b.n, 'salesscreen.activities.v1', (SELECT company_id::text FROM bulk_tenant) || '/' || ci.user_id,
       md5('bulk-' || b.n), convert_to(repeat(md5(b.record_id), 9), 'UTF8')
FROM batch b
JOIN crm_identities ci ON ci.integration_id = (SELECT integration_id FROM bulk_tenant) AND ci.crm_user_id = b.crm_user_id
WHERE b.matched AND ci.user_id IS NOT NULL;
COMMIT;
-- 7. After publishing: the batch's outbox rows are forgotten.
DELETE FROM outbox WHERE event_id IN (SELECT 'bulk-' || n FROM generate_series(64 * :b, 64 * :b + 63) AS n);
