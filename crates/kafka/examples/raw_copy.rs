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
#[path = "support/copy.rs"]
mod copying;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use copying::{Args, Tally};
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
    let count = a.records_of(index);
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
    let a = copying::args("raw-copy");
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
    let mut tally = Tally::new();
    while tally.done < a.events {
        let message = consumer.recv().await.expect("recv");
        producer.begin_transaction().expect("begin_transaction");
        let deadline = Instant::now() + limits.max_wait;
        let mut offsets = BTreeMap::new();
        let mut deliveries = Vec::new();
        let mut n = 0u64;
        let mut next = Some(message);
        while let Some(m) = next.take() {
            tally.written += copy(&a, &producer, &m, tally.done + n, &mut deliveries).await;
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
        tally.committed(n);
    }
    println!("{}", tally.line("raw_copy"));
}
