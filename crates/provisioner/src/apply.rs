//! Applying `WorkflowOutcome`s to the database, exactly once per outcome id: a matched one
//! records (or updates, or re-activates) its activity, a retracted one retracts it.
//!
//! The consecutive outcomes a partition has waiting are applied in one database transaction (a
//! bounded batch), each guarded by its `processed_events` row in that same transaction, so a
//! replayed or duplicate outcome still changes nothing. The messages the transaction staged in
//! the outbox are published from memory right after commit and then deleted; the outbox is read
//! back only for what an interrupted attempt left behind.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use crm_sync_kafka::{
    BatchItem, Failure, Incoming, MessageHandler, OutgoingMessage, Publisher, outbox_relay,
};
use crm_sync_proto::v1::{
    ActivityChanged, ActivityState, OutcomeKind, UserProvisioned, UserStatus, WorkflowOutcome,
};
use crm_sync_proto::{Message, Timestamp};
use crm_sync_store::outbox::{self, Pending};
use futures::future::try_join_all;
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;
use uuid::Uuid;

/// Name under which this service records the events it has applied.
const CONSUMER: &str = "provisioner";
/// Namespace of provisioner-derived ids (activities, change ids, provisioning event ids).
const NAMESPACE: Uuid = Uuid::from_u128(0x3b9d_7e21_55c4_4a0e_b1f6_2d8c_9e07_a4f3);
/// Outcomes applied in one transaction at most: bounds the transaction's duration and locks
/// (a revoke waits for the batch in hand) while amortizing its commit and round trips.
pub const MAX_BATCH: usize = 64;

fn derived_id(parts: &[&str]) -> Uuid {
    Uuid::new_v5(&NAMESPACE, parts.join("\u{1f}").as_bytes())
}

/// Cheap to clone (handles on the pool, the producer and the directory): `crate::auto_sync`
/// provisions through a clone of the consumer's.
#[derive(Clone)]
pub struct Provisioner {
    pub pool: PgPool,
    pub publisher: Publisher,
    pub activities_topic: String,
    pub users_topic: String,
    /// Looks CRM users up (name, email) before an account is created for them; None without
    /// `secrets.encryption_key`.
    pub directory: Option<std::sync::Arc<crate::directory::Directory>>,
}

impl MessageHandler for Provisioner {
    async fn handle(&self, message: &Incoming<'_>) -> Result<(), Failure> {
        // The consume loop runs this under the message's own span. A batch that fails is
        // handled again message by message, so every dead letter passes here.
        let result = self.apply(&[(message, tracing::Span::current())]).await;
        if let Err(Failure::Permanent(letter)) = &result {
            crate::dead_letters::record(&self.pool, crate::SERVICE.name, message, letter).await;
        }
        result
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn handle_batch(&self, items: &[BatchItem<'_>]) -> Result<(), Failure> {
        let messages: Vec<(&Incoming<'_>, tracing::Span)> = items
            .iter()
            .map(|item| (&item.message, item.span.clone()))
            .collect();
        self.apply(&messages).await
    }
}

/// One decoded outcome of a batch.
struct Item {
    outcome: WorkflowOutcome,
    parsed: Parsed,
    /// The message's consumer span: what is forwarded because of it is sent under it.
    span: tracing::Span,
}

/// What one transaction did, for after its commit.
#[derive(Default)]
struct Written {
    /// How many of the given items it covered (fewer than all when it stopped early, see
    /// [`Provisioner::write`]).
    covered: usize,
    /// Staged messages, each with the index of the item that caused it, in staging order.
    staged: Vec<(usize, Pending)>,
    /// Their outbox rows, deleted once Kafka acknowledged them.
    outbox_ids: Vec<i64>,
    /// Items already applied earlier (replays, duplicates).
    duplicates: Vec<usize>,
    counts: Counts,
}

/// Metrics of a transaction, emitted only once it committed, so a retried batch is not counted
/// twice.
#[derive(Default)]
struct Counts {
    applied: u64,
    recorded: u64,
    updated: u64,
    retracted: u64,
    retractions: HashMap<&'static str, u64>,
    users_created: u64,
    users_linked: u64,
    unmapped: u64,
}

impl Counts {
    fn emit(&self, duplicates: usize) {
        let add = |name: &'static str, label: &'static str, value: &'static str, n: u64| {
            if n > 0 {
                metrics::counter!(name, label => value).increment(n);
            }
        };
        add(
            "crm_sync_provisioner_outcomes_total",
            "result",
            "applied",
            self.applied,
        );
        add(
            "crm_sync_provisioner_outcomes_total",
            "result",
            "duplicate",
            duplicates as u64,
        );
        add(
            "crm_sync_provisioner_activities_total",
            "result",
            "recorded",
            self.recorded,
        );
        add(
            "crm_sync_provisioner_activities_total",
            "result",
            "updated",
            self.updated,
        );
        add(
            "crm_sync_provisioner_activities_total",
            "result",
            "retracted",
            self.retracted,
        );
        for (result, n) in &self.retractions {
            add(
                "crm_sync_provisioner_retractions_total",
                "result",
                result,
                *n,
            );
        }
        add(
            "crm_sync_users_provisioned_total",
            "result",
            "created",
            self.users_created,
        );
        add(
            "crm_sync_users_provisioned_total",
            "result",
            "linked",
            self.users_linked,
        );
        if self.unmapped > 0 {
            metrics::counter!("crm_sync_provisioner_unmapped_activities_total")
                .increment(self.unmapped);
        }
    }
}

/// Look-ups a transaction makes again and again for consecutive outcomes, kept for its duration
/// only: nothing the transaction itself does changes them except what it records here.
#[derive(Default)]
pub(crate) struct Cache {
    /// (integration, workflow) → (company, auto_sync_users).
    integrations: HashMap<(Uuid, Uuid), (Uuid, bool)>,
    /// (integration, CRM user) → the platform user it is mapped to.
    users: HashMap<(Uuid, String), Uuid>,
    /// user → counts on leaderboards (on a team, not deactivated).
    pub(crate) on_team: HashMap<Uuid, bool>,
    /// (workflow, record) → its activity (None: there is none), read and locked in one query
    /// for every retraction of the batch. An entry is used at most once, and dropped as soon as
    /// the transaction writes that activity, so a later outcome of the same record reads it anew.
    retraction_targets: HashMap<(Uuid, String), Option<Existing>>,
}

/// An activity as a retraction finds it.
#[derive(sqlx::FromRow)]
struct Existing {
    id: Uuid,
    company_id: Uuid,
    user_id: Option<Uuid>,
    activity_type: String,
    value: Decimal,
    activity_date: DateTime<Utc>,
    state: String,
    last_event_at: DateTime<Utc>,
    workflow_id: Uuid,
    record_id: String,
}

/// How an outcome came out inside the transaction.
enum Step {
    Applied,
    /// Would lock a CRM identity (to create its account, or to record the identity or its name
    /// and email): that is done first thing in a transaction of its own (see
    /// [`Provisioner::write`]).
    OwnTransaction,
}

struct Parsed {
    integration_id: Uuid,
    workflow_id: Uuid,
    value: Decimal,
    activity_date: DateTime<Utc>,
    occurred_at: DateTime<Utc>,
}

impl Parsed {
    fn from(o: &WorkflowOutcome) -> Result<Parsed, Failure> {
        let uuid = |name: &'static str, v: &str| {
            Uuid::parse_str(v).map_err(|_| {
                Failure::permanent("invalid_outcome", format!("{name} {v:?} is not a UUID"))
            })
        };
        if o.outcome_id.is_empty() || o.record_id.is_empty() {
            return Err(Failure::permanent(
                "invalid_outcome",
                "outcome_id and record_id are required",
            ));
        }
        let value = o.value.parse::<Decimal>().map_err(|e| {
            Failure::permanent("invalid_outcome", format!("value {:?}: {e}", o.value))
        })?;
        let occurred_at = o
            .occurred_at
            .as_ref()
            .and_then(to_datetime)
            .unwrap_or_else(Utc::now);
        Ok(Parsed {
            integration_id: uuid("integration_id", &o.integration_id)?,
            workflow_id: uuid("workflow_id", &o.workflow_id)?,
            value,
            activity_date: o
                .activity_date
                .as_ref()
                .and_then(to_datetime)
                .unwrap_or(occurred_at),
            occurred_at,
        })
    }
}

fn to_datetime(ts: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

fn to_timestamp(dt: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: dt.timestamp(),
        nanos: dt.timestamp_subsec_nanos() as i32,
    }
}

/// Connection loss, serialization failures and deadlocks resolve on a later attempt; a value the
/// database refuses (an out-of-range date, a NUL, an id too long for its index) never does, and
/// is dead-lettered so that it cannot hold up the partition. In a batch it fails the whole
/// transaction, and the consume loop then applies the batch one outcome at a time, so only the
/// refused outcome is dead-lettered.
fn db(error: sqlx::Error) -> Failure {
    Failure::database(error)
}

impl Provisioner {
    /// The database write of a batch as a client span (OpenTelemetry database conventions), so a
    /// trace shows how long the transaction took, lock waits included.
    fn transaction_span(&self, outcomes: usize) -> tracing::Span {
        let options = self.pool.connect_options();
        tracing::info_span!(
            "db_transaction",
            otel.name = "TRANSACTION apply_outcome",
            otel.kind = "client",
            db.system.name = "postgresql",
            db.namespace = options.get_database().unwrap_or_default(),
            db.operation.name = "TRANSACTION",
            db.operation.batch.size = outcomes,
            db.query.summary = "apply workflow outcomes",
            server.address = options.get_host(),
            server.port = options.get_port(),
        )
    }

    /// Applies consecutive outcomes of one partition: decodes them all (a poison message fails
    /// the call before anything is written), then writes them in as few transactions as
    /// possible, publishing what each transaction staged right after its commit.
    async fn apply(&self, messages: &[(&Incoming<'_>, tracing::Span)]) -> Result<(), Failure> {
        let mut items = Vec::with_capacity(messages.len());
        for (message, span) in messages {
            let outcome =
                WorkflowOutcome::decode(message.payload.unwrap_or_default()).map_err(|e| {
                    Failure::permanent(
                        "undecodable",
                        format!("not a crm_sync.v1.WorkflowOutcome: {e}"),
                    )
                })?;
            if outcome.kind() == OutcomeKind::Unspecified {
                return Err(Failure::permanent(
                    "invalid_outcome",
                    "outcome kind is unspecified",
                ));
            }
            let parsed = Parsed::from(&outcome)?;
            items.push(Item {
                outcome,
                parsed,
                span: span.clone(),
            });
        }
        // Outside the transaction: a slow CRM API must not hold row locks.
        if let Some(directory) = &self.directory {
            for item in &items {
                directory
                    .prepare(&item.outcome)
                    .instrument(item.span.clone())
                    .await;
            }
        }
        let mut start = 0;
        while start < items.len() {
            let rest = &items[start..];
            let written = self
                .write(rest)
                .instrument(self.transaction_span(rest.len()))
                .await?;
            written.counts.emit(written.duplicates.len());
            self.publish(rest, &written).await?;
            start += written.covered.max(1);
        }
        Ok(())
    }

    /// Writes the outcomes in one transaction. It stops early, before an outcome that has to
    /// lock a CRM identity (create an account, record a new identity), unless that outcome comes
    /// first. Account creation locks the identity (that is what makes it race-free across
    /// replicas); a transaction holding several such locks, taken in event order, could deadlock
    /// with another partition's, and one taken after activity rows could deadlock with an
    /// admin's mapping (identity first, then the activities). So each transaction takes at most
    /// one identity lock, before any activity lock.
    async fn write(&self, items: &[Item]) -> Result<Written, Failure> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let ids: Vec<&str> = items
            .iter()
            .map(|i| i.outcome.outcome_id.as_str())
            .collect();
        // Each outcome's deduplication row, all in one round trip; the returned ids are the
        // outcomes seen for the first time (a duplicate within the batch is returned once).
        let first_time: Vec<(String,)> = sqlx::query_as(
            "INSERT INTO processed_events (consumer, event_id)
             SELECT $1, e FROM UNNEST($2::text[]) AS e
             ON CONFLICT DO NOTHING RETURNING event_id",
        )
        .bind(CONSUMER)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut fresh: HashSet<String> = first_time.into_iter().map(|(id,)| id).collect();
        let mut written = Written::default();
        let mut cache = Cache::default();
        let mut prefetched = false;
        for (index, item) in items.iter().enumerate() {
            if !fresh.contains(&item.outcome.outcome_id) {
                written.duplicates.push(index);
                written.covered = index + 1;
                continue;
            }
            let step = match item.outcome.kind() {
                OutcomeKind::Retracted => {
                    if !prefetched {
                        // Only now, not at the start: an outcome that locks a CRM identity
                        // comes first, before any activity is locked.
                        prefetch_retraction_targets(&mut tx, &mut cache, &items[index..]).await?;
                        prefetched = true;
                    }
                    self.apply_retracted(&mut tx, &mut cache, &mut written, index, item)
                        .await?
                }
                // Unspecified was refused while decoding.
                _ => {
                    self.apply_matched(&mut tx, &mut cache, &mut written, index, item)
                        .await?
                }
            };
            if let Step::OwnTransaction = step {
                // Un-claim the outcomes this transaction leaves to the next one.
                let left: Vec<&str> = items[index..]
                    .iter()
                    .map(|i| i.outcome.outcome_id.as_str())
                    .filter(|id| fresh.contains(*id))
                    .collect();
                sqlx::query(
                    "DELETE FROM processed_events WHERE consumer = $1 AND event_id = ANY($2)",
                )
                .bind(CONSUMER)
                .bind(&left)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                break;
            }
            fresh.remove(&item.outcome.outcome_id);
            written.counts.applied += 1;
            written.covered = index + 1;
        }
        let rows: Vec<(&str, &Pending)> = written
            .staged
            .iter()
            .map(|(index, message)| (items[*index].outcome.outcome_id.as_str(), message))
            .collect();
        written.outbox_ids = outbox::stage_all(&mut tx, &rows).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(written)
    }

    /// Publishes what a committed transaction staged, from memory, each message under the span
    /// of the outcome that caused it; then forgets the outbox rows. Also publishes what earlier,
    /// interrupted attempts at the duplicates left in the outbox. A failure here leaves the rows
    /// for the retry (which finds the outcomes applied and publishes their rows) or the sweep.
    async fn publish(&self, items: &[Item], written: &Written) -> Result<(), Failure> {
        if !written.staged.is_empty() {
            let mut per_item: Vec<Vec<OutgoingMessage>> = vec![Vec::new(); written.covered];
            for (index, message) in &written.staged {
                per_item[*index].push(outbox_relay::pending_to_outgoing(message));
            }
            // All sends are queued at once, in staging order, so per-key order is kept.
            try_join_all(
                per_item
                    .iter()
                    .zip(items)
                    .filter(|(messages, _)| !messages.is_empty())
                    .map(|(messages, item)| {
                        self.publisher
                            .publish_all(messages)
                            .instrument(item.span.clone())
                    }),
            )
            .await
            .map_err(Failure::transient)?;
            outbox::delete(&self.pool, &written.outbox_ids)
                .await
                .map_err(|e| {
                    Failure::transient(
                        anyhow::Error::new(e).context("deleting published outbox rows"),
                    )
                })?;
        }
        if !written.duplicates.is_empty() {
            let ids: Vec<&str> = written
                .duplicates
                .iter()
                .map(|index| items[*index].outcome.outcome_id.as_str())
                .collect();
            outbox_relay::publish_batches(&self.pool, &self.publisher, &ids)
                .await
                .map_err(Failure::Transient)?;
        }
        Ok(())
    }

    async fn apply_matched(
        &self,
        tx: &mut PgConnection,
        cache: &mut Cache,
        written: &mut Written,
        index: usize,
        item: &Item,
    ) -> Result<Step, Failure> {
        let (o, p) = (&item.outcome, &item.parsed);
        let (company_id, auto_sync) =
            match cache.integrations.get(&(p.integration_id, p.workflow_id)) {
                Some(found) => *found,
                None => {
                    let integration: Option<(Uuid, bool)> = sqlx::query_as(
                        "SELECT i.company_id, i.auto_sync_users FROM integrations i
                     JOIN workflows w ON w.integration_id = i.id AND w.id = $2
                     WHERE i.id = $1",
                    )
                    .bind(p.integration_id)
                    .bind(p.workflow_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
                    let Some(found) = integration else {
                        return Err(Failure::permanent(
                            "unknown_integration",
                            format!(
                                "integration {} or its workflow {} does not exist",
                                p.integration_id, p.workflow_id
                            ),
                        ));
                    };
                    cache
                        .integrations
                        .insert((p.integration_id, p.workflow_id), found);
                    found
                }
            };

        let named_owner = o
            .owner
            .as_ref()
            .map(|u| u.crm_user_id.as_str())
            .filter(|s| !s.is_empty());
        let crm_user_id = match named_owner {
            Some(owner) => owner.to_owned(),
            None => last_known_owner(tx, p.integration_id, o)
                .await
                .map_err(db)?
                .ok_or_else(|| {
                    Failure::permanent(
                        "unknown_owner",
                        format!(
                            "record {}/{} names no owner and none is known",
                            o.object_type, o.record_id
                        ),
                    )
                })?,
        };

        let cached_user = cache
            .users
            .get(&(p.integration_id, crm_user_id.clone()))
            .copied();
        let identity = match cached_user {
            Some(user_id) => Some(Identity {
                user_id: Some(user_id),
                named: true,
                has_email: true,
                held: false,
            }),
            None => stored_identity(tx, p.integration_id, &crm_user_id)
                .await
                .map_err(db)?,
        };
        let mapped = identity.as_ref().and_then(|i| i.user_id);
        let locks_identity = mapped.is_none()
            && (auto_sync || needs_identity_write(identity.as_ref(), o, &crm_user_id));
        if locks_identity && index > 0 {
            return Ok(Step::OwnTransaction);
        }
        if named_owner.is_some() {
            remember_owner(tx, company_id, p.integration_id, o, &crm_user_id)
                .await
                .map_err(db)?;
        }

        let user_id = match mapped {
            Some(user_id) => Some(user_id),
            // An identity an admin unmapped waits unmapped even with auto-sync on.
            None if auto_sync && !identity.as_ref().is_some_and(|i| i.held) => {
                let user_id = self
                    .provision_user(
                        tx,
                        written,
                        index,
                        company_id,
                        p.integration_id,
                        o,
                        &crm_user_id,
                    )
                    .await?;
                // Attaching the user's unmapped activities may have changed prefetched ones.
                cache.retraction_targets.clear();
                Some(user_id)
            }
            None => {
                // Kept as unmapped: listed for admins, attached once the identity is mapped.
                if needs_identity_write(identity.as_ref(), o, &crm_user_id) {
                    ensure_identity(tx, company_id, p.integration_id, o, &crm_user_id)
                        .await
                        .map_err(db)?;
                }
                written.counts.unmapped += 1;
                None
            }
        };
        if let Some(user_id) = user_id {
            cache
                .users
                .insert((p.integration_id, crm_user_id.clone()), user_id);
        }

        let activity_id = derived_id(&["activity", &o.workflow_id, &o.record_id]);
        // What was prefetched for a later retraction of this record is stale after this write.
        cache
            .retraction_targets
            .remove(&(p.workflow_id, o.record_id.clone()));
        let upserted: Option<(bool,)> = sqlx::query_as(
            "INSERT INTO activities (id, company_id, integration_id, workflow_id, object_type, record_id,
                                     crm_user_id, user_id, activity_type, value, activity_date, state,
                                     last_event_at, last_event_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'recorded', $12, $13)
             ON CONFLICT (workflow_id, record_id) DO UPDATE SET
                 crm_user_id = EXCLUDED.crm_user_id, user_id = EXCLUDED.user_id,
                 value = EXCLUDED.value, activity_date = EXCLUDED.activity_date, state = 'recorded',
                 last_event_at = EXCLUDED.last_event_at, last_event_id = EXCLUDED.last_event_id,
                 updated_at = now()
             -- An older change arriving late must not overwrite a newer one.
             WHERE activities.last_event_at <= EXCLUDED.last_event_at
             RETURNING (xmax = 0)",
        )
        .bind(activity_id)
        .bind(company_id)
        .bind(p.integration_id)
        .bind(p.workflow_id)
        .bind(&o.object_type)
        .bind(&o.record_id)
        .bind(&crm_user_id)
        .bind(user_id)
        .bind(&o.activity_type)
        .bind(p.value)
        .bind(p.activity_date)
        .bind(p.occurred_at)
        .bind(&o.outcome_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;

        if let (Some((inserted,)), Some(user_id)) = (upserted, user_id) {
            let visible = crate::people::counts_on_leaderboards(tx, cache, user_id)
                .await
                .map_err(db)?;
            let change = ActivityChanged {
                change_id: derived_id(&[
                    "activity-changed",
                    &activity_id.to_string(),
                    &o.outcome_id,
                ])
                .to_string(),
                activity_id: activity_id.to_string(),
                company_id: company_id.to_string(),
                user_id: user_id.to_string(),
                integration_id: o.integration_id.clone(),
                workflow_id: o.workflow_id.clone(),
                activity_type: o.activity_type.clone(),
                value: p.value.to_string(),
                activity_date: Some(to_timestamp(p.activity_date)),
                visible,
                object_type: o.object_type.clone(),
                record_id: o.record_id.clone(),
                source_event_id: o.event_id.clone(),
                changed_at: Some(to_timestamp(Utc::now())),
                state: ActivityState::Recorded as i32,
            };
            self.stage_activity(written, index, &change);
            if inserted {
                written.counts.recorded += 1;
            } else {
                written.counts.updated += 1;
            }
        }
        Ok(Step::Applied)
    }

    /// Retracts the activity of (workflow, record), if there is one: the record no longer
    /// matches, or was deleted. The activity keeps its user, value and date (deletes do not
    /// carry the owner, and need not: the activity knows it), and a later match re-activates
    /// it. Without an activity there is nothing to retract; that is counted, not an error.
    async fn apply_retracted(
        &self,
        tx: &mut PgConnection,
        cache: &mut Cache,
        written: &mut Written,
        index: usize,
        item: &Item,
    ) -> Result<Step, Failure> {
        let (o, p) = (&item.outcome, &item.parsed);
        let key = (p.workflow_id, o.record_id.clone());
        let existing: Option<Existing> = match cache.retraction_targets.remove(&key) {
            Some(prefetched) => prefetched,
            None => sqlx::query_as(
                "SELECT id, company_id, user_id, activity_type, value, activity_date, state, last_event_at,
                        workflow_id, record_id
                 FROM activities WHERE workflow_id = $1 AND record_id = $2 FOR UPDATE",
            )
            .bind(p.workflow_id)
            .bind(&o.record_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?,
        };
        let result = match existing {
            None => "nothing_to_retract",
            // An older change arriving late must not overwrite a newer one.
            Some(a) if a.last_event_at > p.occurred_at => "stale",
            Some(a) => {
                sqlx::query(
                    "UPDATE activities SET state = 'retracted', last_event_at = $2, last_event_id = $3,
                                           updated_at = now()
                     WHERE id = $1",
                )
                .bind(a.id)
                .bind(p.occurred_at)
                .bind(&o.outcome_id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                if a.state == "retracted" {
                    "already_retracted"
                } else {
                    if let Some(user_id) = a.user_id {
                        let visible = crate::people::counts_on_leaderboards(tx, cache, user_id)
                            .await
                            .map_err(db)?;
                        let change = ActivityChanged {
                            change_id: derived_id(&[
                                "activity-changed",
                                &a.id.to_string(),
                                &o.outcome_id,
                            ])
                            .to_string(),
                            activity_id: a.id.to_string(),
                            company_id: a.company_id.to_string(),
                            user_id: user_id.to_string(),
                            integration_id: o.integration_id.clone(),
                            workflow_id: o.workflow_id.clone(),
                            activity_type: a.activity_type.clone(),
                            value: a.value.to_string(),
                            activity_date: Some(to_timestamp(a.activity_date)),
                            state: ActivityState::Retracted as i32,
                            visible,
                            object_type: o.object_type.clone(),
                            record_id: o.record_id.clone(),
                            source_event_id: o.event_id.clone(),
                            changed_at: Some(to_timestamp(Utc::now())),
                        };
                        self.stage_activity(written, index, &change);
                    }
                    written.counts.retracted += 1;
                    "retracted"
                }
            }
        };
        *written.counts.retractions.entry(result).or_default() += 1;
        Ok(Step::Applied)
    }

    /// Creates (or links) the platform user for a CRM user exactly once, even when replicas race:
    /// the identity row is inserted first and then locked, so only one transaction finds it
    /// without a user and creates one; the others wait for it and reuse its user.
    #[allow(clippy::too_many_arguments)]
    async fn provision_user(
        &self,
        tx: &mut PgConnection,
        written: &mut Written,
        index: usize,
        company_id: Uuid,
        integration_id: Uuid,
        o: &WorkflowOutcome,
        crm_user_id: &str,
    ) -> Result<Uuid, Failure> {
        ensure_identity(tx, company_id, integration_id, o, crm_user_id)
            .await
            .map_err(db)?;
        self.provision_identity(tx, written, index, company_id, integration_id, crm_user_id)
            .await
    }

    /// Provisions one CRM identity that is waiting with unmapped activities, in a transaction
    /// of its own, and publishes what it staged (for `crate::auto_sync`, when auto-sync was
    /// turned on). Nothing happens if auto-sync was turned off meanwhile. The outbox rows are
    /// staged under `staged_under`, unique per attempt, so that a crash between commit and
    /// publishing leaves them to the relay.
    pub(crate) async fn provision_waiting_identity(
        &self,
        company_id: Uuid,
        integration_id: Uuid,
        crm_user_id: &str,
        staged_under: &str,
    ) -> Result<(), Failure> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Re-read in the transaction: the admin may have turned auto-sync off since.
        let (still_on,): (bool,) =
            sqlx::query_as("SELECT auto_sync_users FROM integrations WHERE id = $1")
                .bind(integration_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        if !still_on {
            return Ok(());
        }
        let mut written = Written::default();
        self.provision_identity(
            &mut tx,
            &mut written,
            0,
            company_id,
            integration_id,
            crm_user_id,
        )
        .await?;
        let rows: Vec<(&str, &Pending)> = written
            .staged
            .iter()
            .map(|(_, message)| (staged_under, message))
            .collect();
        let outbox_ids = outbox::stage_all(&mut tx, &rows).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        written.counts.emit(0);
        // Committed: if publishing fails now, the outbox relay sends the rows later.
        let messages: Vec<OutgoingMessage> = written
            .staged
            .iter()
            .map(|(_, message)| outbox_relay::pending_to_outgoing(message))
            .collect();
        self.publisher
            .publish_all(&messages)
            .await
            .map_err(Failure::transient)?;
        outbox::delete(&self.pool, &outbox_ids).await.map_err(|e| {
            Failure::transient(anyhow::Error::new(e).context("deleting published outbox rows"))
        })?;
        Ok(())
    }

    /// The part of [`Self::provision_user`] that needs no outcome: the identity row must exist.
    /// Messages are staged in `written` under item `index`.
    async fn provision_identity(
        &self,
        tx: &mut PgConnection,
        written: &mut Written,
        index: usize,
        company_id: Uuid,
        integration_id: Uuid,
        crm_user_id: &str,
    ) -> Result<Uuid, Failure> {
        let (existing, name, email, directory_email): IdentityRow = sqlx::query_as(
            "SELECT user_id, display_name, email, directory_email FROM crm_identities
             WHERE integration_id = $1 AND crm_user_id = $2 FOR UPDATE",
        )
        .bind(integration_id)
        .bind(crm_user_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        // Never re-linked: an identity keeps the account it has.
        if let Some(user_id) = existing {
            return Ok(user_id);
        }
        let display_name = name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| crm_user_id.to_owned());
        let directory_email = directory_email.filter(|e| !e.trim().is_empty());
        let payload_email = email.filter(|e| !e.trim().is_empty());
        let linked_to = match &directory_email {
            Some(email) => account_to_link(tx, company_id, email).await.map_err(db)?,
            None => None,
        };
        let (user_id, status, linked, email) = match linked_to {
            Some((id, status)) => (id, status, true, directory_email),
            None => {
                let id = derived_id(&["user", &integration_id.to_string(), crm_user_id]);
                let email = new_account_email(tx, company_id, directory_email, payload_email)
                    .await
                    .map_err(db)?;
                sqlx::query(
                    "INSERT INTO users (id, company_id, display_name, email, status, source, email_from_payload)
                     VALUES ($1, $2, $3, $4, 'pending', 'auto_sync', $5)",
                )
                .bind(id)
                .bind(company_id)
                .bind(&display_name)
                .bind(email.as_ref().map(|(e, _)| e))
                .bind(email.as_ref().is_some_and(|(_, from_payload)| *from_payload))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                (id, "pending".to_owned(), false, email.map(|(e, _)| e))
            }
        };
        sqlx::query(
            "UPDATE crm_identities SET user_id = $3, updated_at = now()
             WHERE integration_id = $1 AND crm_user_id = $2",
        )
        .bind(integration_id)
        .bind(crm_user_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;

        let provisioned = UserProvisioned {
            event_id: derived_id(&["user-provisioned", &integration_id.to_string(), crm_user_id])
                .to_string(),
            company_id: company_id.to_string(),
            user_id: user_id.to_string(),
            integration_id: integration_id.to_string(),
            crm_user_id: crm_user_id.to_owned(),
            display_name,
            email: email.unwrap_or_default(),
            status: if status == "active" {
                UserStatus::Active
            } else {
                UserStatus::Pending
            } as i32,
            linked_existing_user: linked,
            provisioned_at: Some(to_timestamp(Utc::now())),
            merged_user_ids: Vec::new(),
        };
        written.staged.push((
            index,
            Pending {
                topic: self.users_topic.clone(),
                key: format!("{company_id}/{user_id}"),
                message_id: provisioned.event_id.clone(),
                payload: provisioned.encode_to_vec(),
            },
        ));
        if linked {
            written.counts.users_linked += 1;
        } else {
            written.counts.users_created += 1;
        }
        tracing::info!(%user_id, %integration_id, crm_user_id, linked, "provisioned platform user");

        self.attach_unmapped(
            tx,
            written,
            index,
            company_id,
            integration_id,
            crm_user_id,
            user_id,
        )
        .await?;
        Ok(user_id)
    }

    /// Activities kept while the identity was unmapped now belong to the user.
    #[allow(clippy::too_many_arguments)]
    async fn attach_unmapped(
        &self,
        tx: &mut PgConnection,
        written: &mut Written,
        index: usize,
        company_id: Uuid,
        integration_id: Uuid,
        crm_user_id: &str,
        user_id: Uuid,
    ) -> Result<(), Failure> {
        #[derive(sqlx::FromRow)]
        struct Attached {
            id: Uuid,
            workflow_id: Uuid,
            activity_type: String,
            value: Decimal,
            activity_date: DateTime<Utc>,
            object_type: String,
            record_id: String,
            last_event_id: String,
        }
        let attached: Vec<Attached> = sqlx::query_as(
            "UPDATE activities SET user_id = $3, updated_at = now()
             WHERE integration_id = $1 AND crm_user_id = $2 AND user_id IS NULL AND state = 'recorded'
             RETURNING id, workflow_id, activity_type, value, activity_date, object_type, record_id, last_event_id",
        )
        .bind(integration_id)
        .bind(crm_user_id)
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        if attached.is_empty() {
            return Ok(());
        }
        // Not cached: the user was created just now, and this runs once per user.
        let visible = crate::people::counts_on_leaderboards(tx, &mut Cache::default(), user_id)
            .await
            .map_err(db)?;
        for a in &attached {
            let change = ActivityChanged {
                change_id: derived_id(&[
                    "activity-attached",
                    &a.id.to_string(),
                    &user_id.to_string(),
                ])
                .to_string(),
                activity_id: a.id.to_string(),
                company_id: company_id.to_string(),
                user_id: user_id.to_string(),
                integration_id: integration_id.to_string(),
                workflow_id: a.workflow_id.to_string(),
                activity_type: a.activity_type.clone(),
                value: a.value.to_string(),
                activity_date: Some(to_timestamp(a.activity_date)),
                state: ActivityState::Recorded as i32,
                visible,
                object_type: a.object_type.clone(),
                record_id: a.record_id.clone(),
                source_event_id: a.last_event_id.clone(),
                changed_at: Some(to_timestamp(Utc::now())),
            };
            self.stage_activity(written, index, &change);
        }
        tracing::info!(%user_id, attached = attached.len(), "attached unmapped activities");
        Ok(())
    }

    /// Stages an `ActivityChanged` for the outbox rows the transaction writes before commit.
    fn stage_activity(&self, written: &mut Written, index: usize, change: &ActivityChanged) {
        written.staged.push((
            index,
            Pending {
                topic: self.activities_topic.clone(),
                key: format!("{}/{}", change.company_id, change.user_id),
                message_id: change.change_id.clone(),
                payload: change.encode_to_vec(),
            },
        ));
    }
}

/// Remembers the record's owner (for outcomes of an evaluator without record state, which name
/// no owner on deletes) unless it is already the stored one, as it usually is: the no-op case must
/// not reach the upsert, which would lock the row until the batch commits for nothing.
async fn remember_owner(
    tx: &mut PgConnection,
    company_id: Uuid,
    integration_id: Uuid,
    o: &WorkflowOutcome,
    owner: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO record_owners (company_id, integration_id, object_type, record_id, crm_user_id)
         SELECT $1, $2, $3, $4, $5
         WHERE NOT EXISTS (
             SELECT 1 FROM record_owners
             WHERE integration_id = $2 AND object_type = $3 AND record_id = $4 AND crm_user_id = $5)
         ON CONFLICT (integration_id, object_type, record_id) DO UPDATE
             SET crm_user_id = EXCLUDED.crm_user_id, updated_at = now()
             WHERE record_owners.crm_user_id <> EXCLUDED.crm_user_id",
    )
    .bind(company_id)
    .bind(integration_id)
    .bind(&o.object_type)
    .bind(&o.record_id)
    .bind(owner)
    .execute(tx)
    .await?;
    Ok(())
}

async fn last_known_owner(
    tx: &mut PgConnection,
    integration_id: Uuid,
    o: &WorkflowOutcome,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT crm_user_id FROM record_owners WHERE integration_id = $1 AND object_type = $2 AND record_id = $3",
    )
    .bind(integration_id)
    .bind(&o.object_type)
    .bind(&o.record_id)
    .fetch_optional(tx)
    .await?;
    Ok(row.map(|(id,)| id))
}

/// Reads and locks, in one query, the activity of every retraction among `items` (most
/// outcomes are retractions, and most of those find none): one round trip instead of one each.
async fn prefetch_retraction_targets(
    tx: &mut PgConnection,
    cache: &mut Cache,
    items: &[Item],
) -> Result<(), Failure> {
    let targets: Vec<(Uuid, &str)> = items
        .iter()
        .filter(|i| i.outcome.kind() == OutcomeKind::Retracted)
        .map(|i| (i.parsed.workflow_id, i.outcome.record_id.as_str()))
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    let (workflows, records): (Vec<Uuid>, Vec<&str>) = targets.iter().copied().unzip();
    let found: Vec<Existing> = sqlx::query_as(
        "SELECT a.id, a.company_id, a.user_id, a.activity_type, a.value, a.activity_date,
                a.state, a.last_event_at, a.workflow_id, a.record_id
         FROM activities a
         JOIN UNNEST($1::uuid[], $2::text[]) AS t(workflow_id, record_id)
           ON a.workflow_id = t.workflow_id AND a.record_id = t.record_id
         FOR UPDATE OF a",
    )
    .bind(&workflows)
    .bind(&records)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    for (workflow_id, record_id) in targets {
        cache
            .retraction_targets
            .insert((workflow_id, record_id.to_owned()), None);
    }
    for activity in found {
        let key = (activity.workflow_id, activity.record_id.clone());
        cache.retraction_targets.insert(key, Some(activity));
    }
    Ok(())
}

type IdentityRow = (Option<Uuid>, Option<String>, Option<String>, Option<String>);

/// The account a CRM identity whose directory email is `email` is linked to instead of getting
/// its own: one whose email an admin or a CRM directory gave, never one a payload claimed.
async fn account_to_link(
    tx: &mut PgConnection,
    company_id: Uuid,
    email: &str,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, status FROM users
         WHERE company_id = $1 AND lower(email) = lower($2) AND NOT email_from_payload",
    )
    .bind(company_id)
    .bind(email)
    .fetch_optional(tx)
    .await
}

/// The email a new account gets (and whether only a payload supplied it): the directory's, else
/// the payload's, unless another account has it already (one account per email in a company);
/// then none, and an admin may merge the two accounts.
async fn new_account_email(
    tx: &mut PgConnection,
    company_id: Uuid,
    directory_email: Option<String>,
    payload_email: Option<String>,
) -> Result<Option<(String, bool)>, sqlx::Error> {
    let Some((email, from_payload)) = directory_email
        .map(|e| (e, false))
        .or(payload_email.map(|e| (e, true)))
    else {
        return Ok(None);
    };
    let (taken,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM users WHERE company_id = $1 AND lower(email) = lower($2))",
    )
    .bind(company_id)
    .bind(&email)
    .fetch_one(tx)
    .await?;
    Ok((!taken).then_some((email, from_payload)))
}

/// A CRM identity as stored: whom it is mapped to, whether its name and email are known, and
/// whether an admin unmapped it (held: auto-sync leaves it alone).
struct Identity {
    user_id: Option<Uuid>,
    named: bool,
    has_email: bool,
    held: bool,
}

async fn stored_identity(
    tx: &mut PgConnection,
    integration_id: Uuid,
    crm_user_id: &str,
) -> Result<Option<Identity>, sqlx::Error> {
    let row: Option<(Option<Uuid>, bool, bool, bool)> = sqlx::query_as(
        "SELECT user_id, display_name IS NOT NULL, email IS NOT NULL, unmapped_at IS NOT NULL FROM crm_identities
         WHERE integration_id = $1 AND crm_user_id = $2",
    )
    .bind(integration_id)
    .bind(crm_user_id)
    .fetch_optional(tx)
    .await?;
    Ok(row.map(|(user_id, named, has_email, held)| Identity {
        user_id,
        named,
        has_email,
        held,
    }))
}

/// Whether [`ensure_identity`] could change anything: the identity is missing, or the event
/// carries a name or email it lacks. Skipping the no-op upsert matters beyond its round trip: an
/// upsert locks the row even when it changes nothing, and that lock would be held until the
/// batch commits, where another partition's batch may want it (deadlock-prone).
fn needs_identity_write(stored: Option<&Identity>, o: &WorkflowOutcome, crm_user_id: &str) -> bool {
    let Some(stored) = stored else {
        return true;
    };
    let (name, email) = owner_details(o, crm_user_id);
    (!stored.named && !name.is_empty()) || (!stored.has_email && !email.is_empty())
}

/// The owner's name and email as the event carries them (empty when it names someone else).
fn owner_details<'a>(o: &'a WorkflowOutcome, crm_user_id: &str) -> (&'a str, &'a str) {
    o.owner
        .as_ref()
        .filter(|u| u.crm_user_id == crm_user_id)
        .map(|u| (u.name.as_str(), u.email.as_str()))
        .unwrap_or_default()
}

async fn ensure_identity(
    tx: &mut PgConnection,
    company_id: Uuid,
    integration_id: Uuid,
    o: &WorkflowOutcome,
    crm_user_id: &str,
) -> Result<(), sqlx::Error> {
    let (name, email) = owner_details(o, crm_user_id);
    sqlx::query(
        "INSERT INTO crm_identities (company_id, integration_id, crm_user_id, display_name, email)
         VALUES ($1, $2, $3, NULLIF($4, ''), NULLIF($5, ''))
         ON CONFLICT (integration_id, crm_user_id) DO UPDATE SET
             display_name = COALESCE(crm_identities.display_name, EXCLUDED.display_name),
             email = COALESCE(crm_identities.email, EXCLUDED.email)",
    )
    .bind(company_id)
    .bind(integration_id)
    .bind(crm_user_id)
    .bind(name)
    .bind(email)
    .execute(tx)
    .await?;
    Ok(())
}
