//! The baseline the workflow-evaluator is measured against: a raw transactional copy from one
//! topic to two, with the evaluator's client configuration and no decoding.
//!
//!   cargo run --release -p crm-sync-kafka --example raw_copy -- --brokers B --from TOPIC \
//!     --state-topic T1 --out-topic T2 --events N [--records-per-event R] [--outcome-bytes S] \
//!     [--group G] [--max-messages M]
//!
//! Per consumed message it writes what the evaluator writes per event: one record of the
//! message's size to `--state-topic` on the message's own partition (the evaluator's record
//! state), and the rest of `--records-per-event` (a mean: 5.95 writes 5 or 6 so that the total
//! comes out right) to `--out-topic` by key, each `--outcome-bytes` long (the size of an encoded
//! `WorkflowOutcome`), every record with the event id header. Batches are committed with their
//! offsets as the evaluator's loop does (up to `--max-messages`, default 500, or the same
//! time). It stops once `--events` messages are committed and prints the same figures as
//! `tests/load/evaluator.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crm_sync_kafka::headers::EVENT_ID;
use crm_sync_kafka::transactional::{BatchLimits, consumer, producer_config};
use crm_sync_runtime::settings::KafkaSettings;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

struct Args {
    brokers: String,
    from: String,
    state_topic: String,
    out_topic: String,
    group: String,
    events: u64,
    records_per_event: f64,
    outcome_bytes: usize,
    max_messages: usize,
}

fn args() -> Args {
    let mut map = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        map.insert(flag.trim_start_matches("--").to_owned(), value);
    }
    let get = |k: &str| {
        map.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("--{k} is required"))
    };
    let pid = std::process::id();
    Args {
        brokers: get("brokers"),
        from: get("from"),
        state_topic: get("state-topic"),
        out_topic: get("out-topic"),
        group: map
            .get("group")
            .cloned()
            .unwrap_or(format!("raw-copy-{pid}")),
        events: get("events").parse().expect("--events: a count"),
        records_per_event: map
            .get("records-per-event")
            .map_or(10.0, |r| r.parse().expect("--records-per-event: a number")),
        outcome_bytes: map
            .get("outcome-bytes")
            .map_or(250, |b| b.parse().expect("--outcome-bytes: a count")),
        max_messages: map
            .get("max-messages")
            .map_or(500, |m| m.parse().expect("--max-messages: a count")),
    }
}

/// User and system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

async fn enqueue(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, [u8], [u8]>,
) -> DeliveryFuture {
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return delivery,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((error, _)) => panic!("producing: {error}"),
        }
    }
}

/// Writes the share of records of the `index`th message copied; returns how many.
async fn copy(
    a: &Args,
    producer: &FutureProducer,
    m: &BorrowedMessage<'_>,
    index: u64,
    deliveries: &mut Vec<DeliveryFuture>,
) -> u64 {
    let upto = |n: u64| (n as f64 * a.records_per_event).round() as u64;
    let count = upto(index + 1) - upto(index);
    let key = m.key().unwrap_or_default();
    let payload = m.payload().unwrap_or_default();
    let event_id = m
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == EVENT_ID).and_then(|h| h.value))
        .unwrap_or_default();
    for i in 0..count {
        let headers = OwnedHeaders::new().insert(Header {
            key: EVENT_ID,
            value: Some(event_id),
        });
        let record = if i == 0 {
            FutureRecord::to(&a.state_topic)
                .key(key)
                .payload(payload)
                .partition(m.partition())
        } else {
            FutureRecord::to(&a.out_topic)
                .key(key)
                .payload(&payload[..payload.len().min(a.outcome_bytes)])
        };
        deliveries.push(enqueue(producer, record.headers(headers)).await);
    }
    count
}

#[tokio::main]
async fn main() {
    let a = args();
    let settings = KafkaSettings::for_brokers(&a.brokers);
    let consumer = consumer(&settings, "raw-copy", &a.group).expect("consumer");
    consumer.subscribe(&[&a.from]).expect("subscribe");
    let producer: FutureProducer = producer_config(&settings, "raw-copy", &a.group)
        .create()
        .expect("producer");
    let p = producer.clone();
    tokio::task::spawn_blocking(move || p.init_transactions(CALL_TIMEOUT))
        .await
        .unwrap()
        .expect("init_transactions");
    // The copy commits one batch at a time, so it is fastest in large batches: 500 (the
    // evaluator's until it overlapped handling with commits) keeps the baseline at its best;
    // the evaluator's own 250 shows what of the gap is the transactions' size.
    let limits = BatchLimits {
        max_messages: a.max_messages,
        ..BatchLimits::default()
    };
    let (mut done, mut written, mut transactions) = (0u64, 0u64, 0u64);
    let mut first: Option<(Instant, u64, f64)> = None;
    while done < a.events {
        let message = consumer.recv().await.expect("recv");
        producer.begin_transaction().expect("begin_transaction");
        let deadline = Instant::now() + limits.max_wait;
        let mut offsets = BTreeMap::new();
        let mut deliveries = Vec::new();
        let mut n = 0u64;
        let mut next = Some(message);
        while let Some(m) = next.take() {
            written += copy(&a, &producer, &m, done + n, &mut deliveries).await;
            offsets.insert(m.partition(), m.offset() + 1);
            n += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            if n as usize >= limits.max_messages || left.is_zero() {
                break;
            }
            next = tokio::select! {
                biased;
                received = consumer.recv() => Some(received.expect("recv")),
                _ = tokio::time::sleep(left.min(limits.idle)) => None,
            };
        }
        for delivery in deliveries {
            delivery.await.expect("delivery").expect("delivered");
        }
        // As the evaluator does: commit only once librdkafka released the delivered messages,
        // or its flush before the commit polls for 100 ms.
        while producer.in_flight_count() > 0 {
            tokio::task::yield_now().await;
        }
        let mut tpl = TopicPartitionList::new();
        for (partition, next) in offsets {
            tpl.add_partition_offset(&a.from, partition, Offset::Offset(next))
                .expect("offsets");
        }
        let group = consumer.group_metadata().expect("group metadata");
        let p = producer.clone();
        tokio::task::spawn_blocking(move || {
            p.send_offsets_to_transaction(&tpl, &group, CALL_TIMEOUT)?;
            p.commit_transaction(CALL_TIMEOUT)
        })
        .await
        .unwrap()
        .expect("commit");
        done += n;
        transactions += 1;
        first.get_or_insert_with(|| (Instant::now(), done, cpu_seconds()));
    }
    let (t0, n0, c0) = first.expect("at least one transaction");
    let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    let events = (done - n0) as f64;
    println!(
        "raw_copy events={done} seconds={secs:.2} events_per_second={:.0} cpu_seconds={cpu:.1} events_per_cpu_second={:.0} records_per_event={:.2} transactions={transactions} events_per_transaction={:.0}",
        events / secs,
        events / cpu.max(0.01),
        written as f64 / done as f64,
        done as f64 / transactions as f64,
    );
}
