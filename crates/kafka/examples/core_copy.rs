//! The raw copy's work done through crm-sync's own transactional consume loop: what the
//! evaluator's loop costs before the evaluator's own work (decoding, record state, judging,
//! the trail).
//!
//!   cargo run --release -p crm-sync-kafka --example core_copy -- <raw_copy's arguments>
//!
//! It writes exactly what `raw_copy` writes for each message (the same arguments), through
//! `run_transactional` with a handler that only builds the outputs, as the evaluator runs it:
//! two transactions in flight, up to `--max-messages` per transaction, the services' tracing
//! (a span per message, at log level `info`) and metrics recorder installed. Against
//! `raw_copy` it measures the loop; against the evaluator, the evaluator's own work. It stops
//! once `--events` messages are committed and prints the same figures as `raw_copy`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "support/copy.rs"]
mod copying;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use copying::{Args, Tally};
use crm_sync_kafka::headers::{EVENT_ID, find};
use crm_sync_kafka::transactional::{
    BatchLimits, TransactionalHandler, TransactionalLoop, Written, consumer, producer_config,
    run_transactional,
};
use crm_sync_kafka::{Failure, Incoming, LoopHealth, OutgoingMessage};
use crm_sync_runtime::settings::{KafkaSettings, LogFormat, TelemetrySettings};
use rdkafka::consumer::Consumer;
use tokio_util::sync::CancellationToken;

struct CoreCopy {
    args: Args,
    state_topic: Arc<str>,
    out_topic: Arc<str>,
    /// Messages handled so far, which decides each one's share of records.
    handled: AtomicU64,
    /// Of the open batch: messages and records.
    open: Mutex<(u64, u64)>,
    /// Of the sealed batches, in commit order.
    sealed: Mutex<VecDeque<(u64, u64)>>,
    tally: Mutex<Tally>,
    stop: CancellationToken,
}

impl TransactionalHandler for CoreCopy {
    async fn handle(&self, message: &Incoming<'_>) -> Result<Vec<OutgoingMessage>, Failure> {
        let index = self.handled.fetch_add(1, Ordering::Relaxed);
        let count = self.args.records_of(index);
        let key: Arc<str> = String::from_utf8_lossy(message.key.unwrap_or_default()).into();
        let payload = message.payload.unwrap_or_default();
        let event_id = find(&message.headers, EVENT_ID).unwrap_or_default();
        let outputs = (0..count)
            .map(|i| OutgoingMessage {
                topic: Arc::clone(if i == 0 {
                    &self.state_topic
                } else {
                    &self.out_topic
                }),
                key: Arc::clone(&key),
                payload: if i == 0 {
                    payload.to_vec()
                } else {
                    payload[..payload.len().min(self.args.outcome_bytes)].to_vec()
                },
                event_id: event_id.to_owned(),
                headers: Vec::new(),
                partition: (i == 0).then_some(message.partition),
            })
            .collect();
        let mut open = self.open.lock().unwrap();
        open.0 += 1;
        open.1 += count;
        Ok(outputs)
    }

    fn sealed(&self) {
        let open = std::mem::take(&mut *self.open.lock().unwrap());
        self.sealed.lock().unwrap().push_back(open);
    }

    fn committed(&self, _written: &[Written]) {
        let (messages, records) = self.sealed.lock().unwrap().pop_front().unwrap_or_default();
        let mut tally = self.tally.lock().unwrap();
        tally.written += records;
        tally.committed(messages);
        if tally.done >= self.args.events {
            self.stop.cancel();
        }
    }

    fn aborted(&self, _partitions: &[i32]) {
        panic!("a transaction was aborted: the figures would count its messages twice");
    }
}

#[tokio::main]
async fn main() {
    let args = copying::args("core-copy");
    let _telemetry = crm_sync_runtime::telemetry::init(
        "core-copy",
        &TelemetrySettings {
            log_level: "info".to_owned(),
            log_format: LogFormat::Json,
            otlp_endpoint: None,
            otlp_headers: None,
            otlp_headers_file: None,
        },
    )
    .expect("telemetry");
    let _metrics = crm_sync_runtime::ops::install_metrics().expect("metrics");
    let settings = KafkaSettings::for_brokers(&args.brokers);
    let consumer = consumer(&settings, "core-copy", &args.group).expect("consumer");
    consumer.subscribe(&[&args.from]).expect("subscribe");
    let stop = CancellationToken::new();
    let copy = CoreCopy {
        state_topic: args.state_topic.as_str().into(),
        out_topic: args.out_topic.as_str().into(),
        handled: AtomicU64::new(0),
        open: Mutex::default(),
        sealed: Mutex::default(),
        tally: Mutex::new(Tally::new()),
        stop: stop.clone(),
        args,
    };
    let from = copy.args.from.clone();
    run_transactional(TransactionalLoop {
        service: "core-copy",
        topic: &from,
        consumer: &consumer,
        producer_config: producer_config(&settings, "core-copy", &copy.args.group),
        producers: 2,
        handler: &copy,
        health: LoopHealth::starting("Kafka transactions not initialized yet"),
        limits: BatchLimits {
            max_messages: copy.args.max_messages,
            ..BatchLimits::default()
        },
        shutdown: stop,
    })
    .await
    .expect("the loop");
    println!("{}", copy.tally.lock().unwrap().line("core_copy"));
}
