//! Reading one changelog partition into the local store, from a checkpoint to the end.
//!
//! "The end" is the partition's high watermark when the restore starts, read with
//! `read_uncommitted`: a transaction still open there (a previous owner's, that died or is being
//! fenced) is waited for, so that whatever it ends as (committed or aborted) is in the restored
//! state. The records themselves are read `read_committed`. The end is reached when a record at
//! or past it arrives, or when the consumer hits the partition's end and the last stable offset
//! has passed it (the log then ends in transaction markers, which are never handed out).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crm_sync_kafka::connection::ReportingContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A changelog record: key and value (None: a tombstone, the record is forgotten).
pub type Record = (Vec<u8>, Option<Vec<u8>>);

/// Records applied per local write batch.
const APPLY_EVERY: usize = 5_000;
/// A restore that makes no progress for this long fails (and is retried).
const STALL: Duration = Duration::from_secs(60);
const CALL: Duration = Duration::from_secs(10);

/// Where changelog partitions are read from.
#[derive(Clone)]
pub struct Source {
    /// A consumer configuration (brokers, security) without group or isolation settings.
    config: ClientConfig,
    topic: String,
    /// The client reading the partitions' ends, made once and kept: a new client first waits for
    /// the partition's leader (about 100 ms), and at start every assigned partition's restore
    /// paid that in turn, even with nothing to restore, while its events waited.
    ends: Arc<Mutex<Option<Arc<Client>>>>,
}

impl Source {
    /// `config`: brokers and security, without group or isolation settings.
    pub fn new(config: ClientConfig, topic: impl Into<String>) -> Source {
        Source {
            config,
            topic: topic.into(),
            ends: Arc::default(),
        }
    }

    /// The `read_uncommitted` client that reads high watermarks, made on first use.
    fn ends(&self) -> anyhow::Result<Arc<Client>> {
        let mut kept = self
            .ends
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = kept.as_ref() {
            return Ok(client.clone());
        }
        let made = Arc::new(client(self, "read_uncommitted")?);
        *kept = Some(made.clone());
        Ok(made)
    }
}

#[derive(Debug, Default)]
pub struct Restored {
    pub records: u64,
    pub from: i64,
    pub to: i64,
    pub seconds: f64,
}

/// The services' reporting context: librdkafka's default logs every partition end a restore
/// reaches as an error.
type Client = BaseConsumer<ReportingContext>;

fn client(source: &Source, isolation: &str) -> anyhow::Result<Client> {
    let mut config = source.config.clone();
    config
        .set("group.id", "crm-sync-record-restore")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .set("queued.max.messages.kbytes", "16384")
        // The default pauses a partition's fetching for a second whenever the local queue is
        // full; a restore drains that queue in milliseconds, so it would sit idle most of the
        // time (measured: 2.5x slower).
        .set("fetch.queue.backoff.ms", "5");
    Ok(config.create_with_context(ReportingContext)?)
}

/// A batch for the applier: whether to empty the keyspace first, the records, and the offset to
/// resume from after them.
type Batch = (bool, Vec<Record>, i64);

/// Reads the partition from `checkpoint` (None: from the start) to its end, handing records to
/// `apply` in batches with the offset to resume from after them. `apply`'s first argument is
/// true once when the local keyspace must be emptied first (its checkpoint is no longer in the
/// log: new disk, or the topic was recreated).
///
/// `apply` runs on a thread of its own, so that the local writes of one batch overlap the
/// fetching and copying of the next; at most two batches wait between them, which bounds the
/// memory a restore holds.
pub fn run<E>(
    source: &Source,
    partition: i32,
    checkpoint: Option<i64>,
    mut apply: impl FnMut(bool, Vec<Record>, i64) -> Result<(), E> + Send,
) -> anyhow::Result<Restored>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let (low, high) = source
        .ends()?
        .fetch_watermarks(&source.topic, partition, CALL)?;
    let (start_over, from) = match checkpoint {
        Some(c) if c >= low && c <= high => (false, c),
        Some(_) | None => (true, low),
    };
    let mut restored = Restored {
        from,
        to: high,
        ..Default::default()
    };
    if from >= high {
        apply(start_over, Vec::new(), high)?;
        return Ok(restored);
    }
    let (batches, received) = std::sync::mpsc::sync_channel::<Batch>(2);
    let read = std::thread::scope(|scope| {
        let applier = scope.spawn(move || -> Result<(), E> {
            for (start_over, records, next) in received {
                apply(start_over, records, next)?;
            }
            Ok(())
        });
        let read = read_to_end(source, partition, (from, high), start_over, &batches);
        drop(batches);
        let applied = applier
            .join()
            .map_err(|_| anyhow::anyhow!("the thread writing restored records panicked"))?;
        applied?;
        read
    })?;
    restored.records = read;
    metrics::gauge!(crate::metric_definitions::RESTORE_REMAINING, "partition" => partition.to_string())
        .set(0.0);
    metrics::counter!(crate::metric_definitions::RESTORED_RECORDS).increment(restored.records);
    restored.seconds = started.elapsed().as_secs_f64();
    Ok(restored)
}

/// Consumes `from..high` (read_committed) into batches for the applier; the records read.
fn read_to_end(
    source: &Source,
    partition: i32,
    (from, high): (i64, i64),
    mut start_over: bool,
    batches: &std::sync::mpsc::SyncSender<Batch>,
) -> anyhow::Result<u64> {
    let consumer = client(source, "read_committed")?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&source.topic, partition, Offset::Offset(from))?;
    consumer.assign(&tpl)?;
    let mut batch: Vec<Record> = Vec::with_capacity(APPLY_EVERY);
    let mut records = 0u64;
    let mut position = from;
    let mut progress_at = Instant::now();
    let mut logged_at = Instant::now();
    let send = |batch: Vec<Record>, next: i64, start_over: &mut bool| {
        let sent = batches.send((*start_over, batch, next));
        *start_over = false;
        // A closed channel means the applier failed: its error is the one reported.
        sent.map_err(|_| anyhow::anyhow!("the thread writing restored records stopped"))
    };
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                batch.push((
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().map(<[u8]>::to_vec),
                ));
                position = m.offset() + 1;
                progress_at = Instant::now();
                if batch.len() >= APPLY_EVERY {
                    records += batch.len() as u64;
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(APPLY_EVERY));
                    send(full, position, &mut start_over)?;
                }
                if position >= high {
                    break;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {
                let (_, stable) = consumer.fetch_watermarks(&source.topic, partition, CALL)?;
                if stable >= high {
                    break;
                }
            }
            Some(Err(error)) => return Err(error.into()),
            None => {}
        }
        if progress_at.elapsed() > STALL {
            anyhow::bail!("no progress for {STALL:?} at offset {position} of {high}");
        }
        if logged_at.elapsed() > Duration::from_secs(5) {
            logged_at = Instant::now();
            tracing::info!(
                partition,
                offset = position,
                end = high,
                "restoring record state"
            );
            metrics::gauge!(crate::metric_definitions::RESTORE_REMAINING, "partition" => partition.to_string())
                .set((high - position).max(0) as f64);
        }
    }
    records += batch.len() as u64;
    send(batch, high, &mut start_over)?;
    Ok(records)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_restore_of_a_source_and_its_clones_reads_the_ends_with_one_client() {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", "127.0.0.1:1");
        let source = Source::new(config, "records");
        let clone = source.clone();
        let first = source.ends().unwrap();
        assert!(Arc::ptr_eq(&first, &source.ends().unwrap()));
        assert!(
            Arc::ptr_eq(&first, &clone.ends().unwrap()),
            "a clone of the source made a client of its own"
        );
    }
}
