//! Applying `WorkflowOutcome`s to the database, exactly once per outcome id: a matched one
//! records (or updates, or re-activates) its activity, a retracted one retracts it.
//!
//! The consecutive outcomes a partition has waiting are applied in one database transaction (a
//! bounded batch), each guarded by its `processed_events` row in that same transaction, so a
//! replayed or duplicate outcome still changes nothing. The batch is written set-based (see
//! `crate::batch`): a handful of statements, whatever the number of outcomes. The messages the
//! transaction staged in the outbox are published from memory right after commit and then
//! deleted; the outbox is read back only for what an interrupted attempt left behind.

use crm_sync_kafka::{BatchItem, Failure, Incoming, MessageHandler};
use crm_sync_outbox::{Outbox, Pending, Staged};
use std::time::Instant;

use sqlx::PgPool;
use tracing::Instrument;

use crate::counts::Counts;
use crate::outcome::Outcome;

/// Outcomes applied in one transaction at most: bounds the transaction's duration and locks
/// (a revoke waits for the batch in hand) while amortizing its commit and round trips.
pub const MAX_BATCH: usize = 64;

/// Cheap to clone (handles on the pool, the outbox and the directory): `crate::auto_sync`
/// provisions through a clone of the consumer's.
#[derive(Clone)]
pub struct Provisioner {
    pub pool: PgPool,
    pub outbox: Outbox,
    pub activities_topic: String,
    pub users_topic: String,
    /// Looks CRM users up (name, email) before an account is created for them; None without
    /// `secrets.encryption_key`.
    pub directory: Option<std::sync::Arc<crate::directory::Directory>>,
    /// `provisioner.concurrent_batches`; None: no limit.
    pub concurrent_batches: Option<usize>,
}

impl MessageHandler for Provisioner {
    async fn handle(&self, message: &Incoming<'_>) -> Result<(), Failure> {
        // The consume loop runs this under the message's own span. A batch that fails is
        // handled again message by message, so every dead letter passes here.
        let result = self.apply(&[(message, tracing::Span::current())]).await;
        if let Err(Failure::Permanent(letter)) = &result {
            crm_sync_store::trail::dead_letters::record(
                &self.pool,
                crate::SERVICE.name,
                message,
                letter,
            )
            .await;
        }
        result
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn concurrent_partial_batches(&self) -> Option<usize> {
        self.concurrent_batches
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
pub(crate) struct Item {
    pub outcome: Outcome,
    /// The message's consumer span: what is forwarded because of it is sent under it.
    pub span: tracing::Span,
}

/// What one transaction did, for after its commit.
#[derive(Default)]
pub(crate) struct Written {
    /// Messages to stage, each with the index of the item that caused it, in staging order.
    pub staged: Vec<(usize, Pending)>,
    /// What the transaction staged of them, published after commit.
    pub outbox: Staged,
    /// Items already applied earlier (replays, duplicates).
    pub duplicates: Vec<usize>,
    pub counts: Counts,
}

impl Written {
    /// Stages a message caused by item `index`, for the outbox rows written before commit.
    pub(crate) fn stage(
        &mut self,
        index: usize,
        topic: &str,
        key: String,
        id: String,
        payload: Vec<u8>,
    ) {
        self.staged.push((
            index,
            Pending {
                topic: topic.to_owned(),
                key,
                message_id: id,
                payload,
            },
        ));
    }
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
            let outcome = Outcome::decode(message.payload.unwrap_or_default())
                .map_err(|invalid| Failure::permanent(invalid.reason, invalid.detail))?;
            items.push(Item {
                outcome,
                span: span.clone(),
            });
        }
        // Outside the transaction: a slow CRM API must not hold row locks. The whole batch at
        // once, for a bounded time: one tenant's CRM must not hold the partition's other tenants.
        if let Some(directory) = &self.directory {
            let began = Instant::now();
            let outcomes: Vec<&Outcome> = items.iter().map(|item| &item.outcome).collect();
            directory.prepare(&outcomes).await;
            phase("directory", began);
        }
        let began = Instant::now();
        let written = self
            .write(&items)
            .instrument(self.transaction_span(items.len()))
            .await?;
        phase("transaction", began);
        metrics::histogram!(crate::metric_definitions::TRANSACTION_OUTCOMES)
            .record(items.len() as f64);
        written.counts.emit(written.duplicates.len());
        self.publish(&items, written).await
    }

    /// Publishes what a committed transaction staged, from memory, each message under the span
    /// of the outcome that caused it; then forgets the outbox rows. Also publishes what earlier,
    /// interrupted attempts at the duplicates left in the outbox. A failure here leaves the rows
    /// for the retry (which finds the outcomes applied and publishes their rows) or the sweep.
    async fn publish(&self, items: &[Item], written: Written) -> Result<(), Failure> {
        if !written.outbox.is_empty() {
            let spans: Vec<tracing::Span> = items.iter().map(|item| item.span.clone()).collect();
            let began = Instant::now();
            self.outbox
                .send_under(&written.outbox, &spans)
                .await
                .map_err(Failure::transient)?;
            phase("publish", began);
            self.forget_published(written.outbox);
        }
        if !written.duplicates.is_empty() {
            let ids: Vec<&str> = written
                .duplicates
                .iter()
                .map(|index| items[*index].outcome.outcome_id.as_str())
                .collect();
            self.outbox
                .publish_batches(&ids)
                .await
                .map_err(Failure::transient)?;
        }
        Ok(())
    }
}

impl Provisioner {
    /// Deletes the outbox rows of acknowledged messages beside the partition's next batch rather
    /// than in front of it: the outcomes' effects are complete once Kafka has the messages, and
    /// the delete (a commit of its own) only keeps the outbox small. Rows a failed delete leaves
    /// are published again by the outbox sweep; consumers deduplicate by message id, as after
    /// any retried publish.
    fn forget_published(&self, staged: Staged) {
        let outbox = self.outbox.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            match outbox.forget(&staged).await {
                Ok(_) => phase("outbox_delete", began),
                Err(error) => tracing::warn!(
                    error = %error,
                    rows = staged.len(),
                    "deleting published outbox rows failed; the outbox sweep publishes them again"
                ),
            }
        });
    }
}

/// How long a step of applying a batch took: the directory lookups before it (bounded by
/// `directory.inline_deadline_ms`), its database transaction, the wait for Kafka's
/// acknowledgements of what it staged, the deletion of their outbox rows. The steps of one
/// partition run one after the other, so their sum is how long its next outcomes wait.
fn phase(name: &'static str, began: Instant) {
    metrics::histogram!(crate::metric_definitions::PHASE, "phase" => name)
        .record(began.elapsed().as_secs_f64());
}
