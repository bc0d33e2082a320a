//! What both consume loops hand their handlers: one consumed message, how handling it failed,
//! and the `process` span it is handled under.

use rdkafka::message::Message;

use crate::dlq::DeadLetter;
use crate::headers;

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

    /// A database error: permanent (`database_refused`, with PostgreSQL's reason) when the
    /// database refused the message's values for good, which no retry changes (see
    /// `crm_sync_runtime::refusal`); transient otherwise. In a batch it fails the whole
    /// transaction, and the consume loop then applies the batch one message at a time, so only
    /// the refused message is dead-lettered.
    pub fn database(error: sqlx::Error) -> Self {
        match crm_sync_runtime::refusal::refused_value(&error) {
            Some(reason) => Failure::permanent(DATABASE_REFUSED, reason),
            None => Failure::transient(anyhow::Error::new(error).context("database")),
        }
    }
}

/// The dead-letter reason of a message whose values the database refuses.
pub const DATABASE_REFUSED: &str = "database_refused";

/// One consumed message, decoupled from rdkafka's borrowed and owned message types. A dead
/// letter names it as its origin.
pub struct Incoming<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub headers: Vec<(String, String)>,
}

impl<'a> Incoming<'a> {
    pub fn of<M: Message>(message: &'a M) -> Incoming<'a> {
        Incoming {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key(),
            payload: message.payload(),
            headers: headers::to_pairs(message.headers()),
        }
    }

    /// The `process {topic}` consumer span of this message, a child of its producer's trace
    /// context; `group` is the consuming service.
    pub fn span(&self, group: &str) -> tracing::Span {
        let span = tracing::info_span!(
            "consume",
            otel.name = format!("process {}", self.topic),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = self.topic,
            messaging.destination.partition.id = self.partition.to_string(),
            messaging.kafka.partition = self.partition,
            messaging.kafka.offset = self.offset,
            messaging.kafka.message.key = self.key.map(String::from_utf8_lossy).as_deref(),
            messaging.message.id = headers::find(&self.headers, headers::EVENT_ID),
            messaging.consumer.group.name = group,
        );
        headers::adopt_trace_context(&span, &self.headers);
        span
    }
}
