//! The at-least-once consume loop: a message's offset is stored only after its handler finished
//! (effects durable) or it was dead-lettered; transient failures are retried, never skipped.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::dlq::{DeadLetter, Origin, publish_dead_letter};
use crate::headers;
use crate::produce::Publisher;

/// How a handler failed.
#[derive(Debug)]
pub enum Failure {
    /// Can never succeed (undecodable, unknown integration): dead-letter it and move on.
    Permanent(DeadLetter),
    /// May succeed later (database or broker down): retry with backoff, never skip.
    Transient(anyhow::Error),
}

impl Failure {
    pub fn permanent(reason: &'static str, detail: impl Into<String>) -> Self {
        Failure::Permanent(DeadLetter {
            reason,
            detail: detail.into(),
        })
    }

    pub fn transient(error: impl Into<anyhow::Error>) -> Self {
        Failure::Transient(error.into())
    }
}

/// One consumed message, decoupled from rdkafka's borrowed types.
pub struct Incoming<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub headers: Vec<(String, String)>,
}

pub trait MessageHandler: Send + Sync {
    fn handle(&self, message: &Incoming<'_>) -> impl Future<Output = Result<(), Failure>> + Send;
}

/// Readiness of a consume loop: false while it is stuck retrying a transient failure.
#[derive(Clone, Default)]
pub struct ConsumerHealth {
    stuck: Arc<AtomicBool>,
}

impl ConsumerHealth {
    pub fn check(&self) -> Result<(), String> {
        if self.stuck.load(Ordering::Relaxed) {
            Err("retrying a transient failure".to_owned())
        } else {
            Ok(())
        }
    }
}

pub struct ConsumeLoop<'a, H> {
    pub service: &'a str,
    pub consumer: &'a crate::clients::ServiceConsumer,
    pub handler: &'a H,
    pub dead_letters: &'a Publisher,
    pub health: ConsumerHealth,
    pub shutdown: CancellationToken,
}

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// Runs until `shutdown` is cancelled, finishing the message in hand, then commits what was
/// stored. Messages are handled one at a time, which keeps each partition in order.
pub async fn run_consumer<H: MessageHandler>(l: ConsumeLoop<'_, H>) -> anyhow::Result<()> {
    loop {
        let received = tokio::select! {
            biased;
            _ = l.shutdown.cancelled() => break,
            received = l.consumer.recv() => received,
        };
        let message = match received {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "Kafka consumer error");
                continue;
            }
        };
        if !process(&l, &message).await {
            // Shut down while retrying: the offset stays unstored, so the message is replayed.
            break;
        }
        if let Err(error) = l.consumer.store_offset_from_message(&message) {
            // Happens when the partition was revoked meanwhile; its new owner replays the message.
            tracing::warn!(%error, "could not store offset");
        }
    }
    match l.consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::info!("committed stored offsets"),
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        )) => {}
        Err(error) => tracing::warn!(%error, "final offset commit failed"),
    }
    Ok(())
}

/// Handles one message to completion; false if shutdown interrupted a retry.
async fn process<H: MessageHandler>(l: &ConsumeLoop<'_, H>, message: &BorrowedMessage<'_>) -> bool {
    let incoming = Incoming {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key(),
        payload: message.payload(),
        headers: headers::to_pairs(message.headers()),
    };
    let span = tracing::info_span!(
        "consume",
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.destination.name = incoming.topic,
        messaging.kafka.partition = incoming.partition,
        messaging.kafka.offset = incoming.offset,
        messaging.consumer.group.name = l.service,
    );
    headers::adopt_trace_context(&span, &incoming.headers);
    let started = Instant::now();
    let mut backoff = BACKOFF_START;
    let mut attempt: u32 = 0;
    loop {
        let outcome = l.handler.handle(&incoming).instrument(span.clone()).await;
        match outcome {
            Ok(()) => {
                record(incoming.topic, "ok", started);
                l.health.stuck.store(false, Ordering::Relaxed);
                return true;
            }
            Err(Failure::Permanent(letter)) => {
                span.in_scope(|| {
                    tracing::warn!(reason = letter.reason, detail = %letter.detail, "dead-lettering message")
                });
                let origin = Origin {
                    topic: incoming.topic,
                    partition: incoming.partition,
                    offset: incoming.offset,
                    key: incoming.key,
                    payload: incoming.payload,
                    headers: &incoming.headers,
                };
                // The dead letter must be durable before the offset moves past the original.
                loop {
                    match publish_dead_letter(l.dead_letters, l.service, &origin, &letter)
                        .instrument(span.clone())
                        .await
                    {
                        Ok(()) => break,
                        Err(error) => {
                            tracing::warn!(%error, "dead-letter publish failed; retrying");
                            l.health.stuck.store(true, Ordering::Relaxed);
                            if !sleep_or_shutdown(&l.shutdown, jittered(backoff)).await {
                                return false;
                            }
                            backoff = (backoff * 2).min(BACKOFF_CAP);
                        }
                    }
                }
                record(incoming.topic, "dead_lettered", started);
                l.health.stuck.store(false, Ordering::Relaxed);
                return true;
            }
            Err(Failure::Transient(error)) => {
                attempt += 1;
                metrics::counter!("crm_sync_retries_total", "topic" => incoming.topic.to_owned())
                    .increment(1);
                span.in_scope(|| {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        attempt,
                        "transient failure; retrying"
                    )
                });
                if attempt >= 3 {
                    l.health.stuck.store(true, Ordering::Relaxed);
                }
                if !sleep_or_shutdown(&l.shutdown, jittered(backoff)).await {
                    return false;
                }
                backoff = (backoff * 2).min(BACKOFF_CAP);
            }
        }
    }
}

fn record(topic: &str, outcome: &'static str, started: Instant) {
    metrics::counter!("crm_sync_messages_consumed_total", "topic" => topic.to_owned(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("crm_sync_processing_seconds", "topic" => topic.to_owned())
        .record(started.elapsed().as_secs_f64());
}

/// Full jitter over the upper half, so replicas retrying together spread out.
fn jittered(base: Duration) -> Duration {
    let half = base / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

async fn sleep_or_shutdown(shutdown: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(duration) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_the_upper_half() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_millis(200));
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(200));
        }
    }
}
