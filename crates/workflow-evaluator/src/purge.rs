//! The record state of deleted integrations is forgotten. Deleting an integration removes its
//! rows from PostgreSQL, but its records' state (their field values, their owners' names and
//! emails) stayed in the compacted changelog for good, restored by every replica that took
//! their partitions. Every `evaluator.purge_interval_secs` each replica lists the integrations
//! its assigned partitions hold records of, asks PostgreSQL which of them were deleted, and for
//! each writes a tombstone per record to the changelog (compaction then drops the record) and
//! removes the records from its local store. Only integrations recorded as deleted are
//! forgotten, never those merely missing: a replica pointed at the wrong database must not wipe
//! the changelog.
//!
//! Integrations held that the database has neither as live nor as deleted are counted and
//! named in a warning each round, and kept.
//!
//! The tombstones are written outside the evaluator's transactions: nothing else writes these
//! keys any more (an event of an integration that does not exist is dead-lettered), and a state
//! that an event judged just before the deletion writes after a tombstone is forgotten at the
//! next round.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use crm_sync_kafka::clients::ServiceProducer;
use crm_sync_store::integrations::Standing;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::RecordStore;

/// Unknown integrations named in a round's warning.
const NAMED: usize = 10;
/// Records tombstoned and forgotten at a time.
const CHUNK: usize = 1_000;
/// The first round after start, once the assigned partitions are likely restored (a round
/// looks only at those).
const FIRST_ROUND: Duration = Duration::from_secs(60);

pub struct Purge {
    pub store: Arc<RecordStore>,
    pub pool: PgPool,
    pub producer: ServiceProducer,
    pub changelog: String,
    pub interval: Duration,
}

impl Purge {
    /// Until shutdown: a round soon after start (a replica restarted more often than the
    /// interval would otherwise never get to one), then one every interval.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut wait = self.interval.min(FIRST_ROUND);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = self.interval;
            let outcome = match self.round(&shutdown).await {
                Ok(_) => "ok",
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "forgetting the record state of deleted integrations failed; trying again at the next round"
                    );
                    "failed"
                }
            };
            metrics::counter!(crate::metric_definitions::PURGE_ROUNDS, "outcome" => outcome)
                .increment(1);
        }
    }

    /// Forgets the records of every integration deleted; how many.
    pub async fn round(&self, shutdown: &CancellationToken) -> anyhow::Result<usize> {
        let store = self.store.clone();
        let held = tokio::task::spawn_blocking(move || store.held_integrations())
            .await
            .context("listing the integrations held")??;
        // A key whose prefix is no id was never written by an evaluator: it is left alone.
        let ids: BTreeSet<Uuid> = held
            .iter()
            .flat_map(|(_, ids)| ids)
            .filter_map(|id| Uuid::parse_str(id).ok())
            .collect();
        if ids.is_empty() {
            report_unknown(&[]);
            return Ok(0);
        }
        let ids: Vec<Uuid> = ids.into_iter().collect();
        let standing = crm_sync_store::integrations::standing(&self.pool, &ids)
            .await
            .context("reading which integrations were deleted")?;
        report_unknown(&standing);
        let deleted: HashSet<Uuid> = standing
            .into_iter()
            .filter(|(_, s)| *s == Standing::Deleted)
            .map(|(id, _)| id)
            .collect();
        // Per integration gone, the partitions holding its records.
        let mut gone: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (partition, integrations) in &held {
            for id in integrations {
                if Uuid::parse_str(id).is_ok_and(|uuid| deleted.contains(&uuid)) {
                    gone.entry(id).or_default().push(*partition);
                }
            }
        }
        let mut forgotten = 0;
        for (integration, partitions) in gone {
            let mut records = 0;
            for partition in partitions {
                if shutdown.is_cancelled() {
                    return Ok(forgotten);
                }
                records += self.forget(partition, integration).await?;
            }
            metrics::counter!(crate::metric_definitions::FORGOTTEN_RECORDS)
                .increment(records as u64);
            tracing::info!(
                integration_id = integration,
                records,
                "forgot the record state of a deleted integration"
            );
            forgotten += records;
        }
        Ok(forgotten)
    }

    /// Tombstones and forgets one integration's records in one partition, a chunk at a time.
    async fn forget(&self, partition: i32, integration: &str) -> anyhow::Result<usize> {
        let mut total = 0;
        loop {
            let store = self.store.clone();
            let id = integration.to_owned();
            let keys = tokio::task::spawn_blocking(move || store.keys_of(partition, &id, CHUNK))
                .await
                .context("reading the records to forget")??;
            if keys.is_empty() {
                return Ok(total);
            }
            self.tombstones(partition, &keys).await?;
            total += keys.len();
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.forget(partition, &keys))
                .await
                .context("forgetting records")??;
        }
    }

    /// Writes a tombstone per key to the changelog partition and waits until all are acknowledged.
    async fn tombstones(&self, partition: i32, keys: &[Vec<u8>]) -> anyhow::Result<()> {
        let sends = keys.iter().map(|key| {
            let record = FutureRecord::<[u8], [u8]>::to(&self.changelog)
                .key(key.as_slice())
                .partition(partition);
            self.producer
                .send(record, Timeout::After(Duration::from_secs(30)))
        });
        for delivered in futures::future::join_all(sends).await {
            delivered.map_err(|(error, _)| error).with_context(|| {
                format!("writing tombstones to {}[{partition}]", self.changelog)
            })?;
        }
        Ok(())
    }
}

/// Integrations this replica holds records of that the database has no trace of: deleted
/// before deletions were recorded, or this replica reads the wrong database. Their state is
/// kept (forgetting it on a wrong database would wipe the changelog); an operator who knows
/// them deleted records them so (`crm-sync admin forget-integration <id>`) and the next round
/// forgets them.
fn report_unknown(standing: &[(Uuid, Standing)]) {
    let unknown: Vec<String> = standing
        .iter()
        .filter(|(_, s)| *s == Standing::Unknown)
        .map(|(id, _)| id.to_string())
        .collect();
    metrics::gauge!(crate::metric_definitions::UNKNOWN_INTEGRATIONS).set(unknown.len() as f64);
    if unknown.is_empty() {
        return;
    }
    let named = unknown
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    tracing::warn!(
        count = unknown.len(),
        integration_ids = named,
        "record state is kept for integrations the database has no trace of; if they were \
         deleted, `crm-sync admin forget-integration <id>` has it forgotten at the next round"
    );
}
