//! The transactional outbox, the one way a writer (the provisioner, admin-api) forwards what a
//! database change announces: messages are staged in the transaction that makes the change,
//! published once it committed, and their rows deleted once Kafka acknowledged them. A crash or
//! a Kafka outage between commit and publish delays a message but never loses it: a relay
//! publishes the rows a writer left behind. Consumers deduplicate by message id, so a message
//! published twice (a relay racing a slow writer, a failed delete) changes nothing downstream.
//!
//! This is the one piece that needs both PostgreSQL (the table's statements are
//! `crm_sync_store::outbox`'s, like every other statement) and Kafka, so it is a crate of its
//! own: the Kafka plumbing stays free of the store, and the store free of Kafka.

mod relay;

use futures::future::try_join_all;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;

use crm_sync_kafka::produce::PublishError;
use crm_sync_kafka::{OutgoingMessage, Publisher};
use crm_sync_store::outbox as table;

pub use crm_sync_store::outbox::Pending;
pub use relay::Sweep;

/// How publishing staged messages failed. The rows stay in the outbox in every case, for a retry
/// or the relay.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("publishing outbox messages")]
    Publish(#[from] PublishError),
    #[error("reading outbox rows")]
    Read(#[source] sqlx::Error),
    #[error("deleting published outbox rows")]
    Delete(#[source] sqlx::Error),
}

/// The outbox of one service: where it publishes what it staged. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    pool: PgPool,
    publisher: Publisher,
}

/// What one transaction staged: the rows, and the messages kept in memory so that publishing
/// after commit needs no read back.
#[derive(Debug, Default)]
pub struct Staged {
    ids: Vec<i64>,
    /// Each message with the writer's index of what caused it (see [`Outbox::send_under`]).
    messages: Vec<(usize, OutgoingMessage)>,
}

impl Staged {
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Stages `message` under `batch_id` (the id of the change that produced it), inside the
    /// caller's transaction.
    pub async fn stage(
        &mut self,
        conn: &mut PgConnection,
        batch_id: &str,
        message: Pending,
    ) -> Result<(), sqlx::Error> {
        let id = table::stage(conn, batch_id, &message).await?;
        self.ids.push(id);
        self.messages.push((0, outgoing(message)));
        Ok(())
    }

    /// Stages many messages in one statement inside the caller's transaction (one round trip
    /// instead of one per message), each given as (what caused it, its batch id, the message).
    pub async fn stage_all(
        &mut self,
        conn: &mut PgConnection,
        messages: Vec<(usize, &str, Pending)>,
    ) -> Result<(), sqlx::Error> {
        let rows: Vec<(&str, &Pending)> = messages
            .iter()
            .map(|(_, batch_id, message)| (*batch_id, message))
            .collect();
        let ids = table::stage_all(conn, &rows).await?;
        self.ids.extend(ids);
        self.messages.extend(
            messages
                .into_iter()
                .map(|(cause, _, message)| (cause, outgoing(message))),
        );
        Ok(())
    }
}

fn outgoing(message: Pending) -> OutgoingMessage {
    OutgoingMessage {
        topic: message.topic.into(),
        key: message.key.into(),
        payload: message.payload,
        event_id: message.message_id,
        headers: Vec::new(),
        partition: None,
    }
}

impl Outbox {
    pub fn new(pool: PgPool, publisher: Publisher) -> Self {
        Outbox { pool, publisher }
    }

    /// Publishes what a committed transaction staged and deletes its rows: the step after every
    /// commit that staged something. Returns how many messages it published.
    pub async fn publish(&self, staged: Staged) -> Result<usize, OutboxError> {
        self.send_under(&staged, &[]).await?;
        self.forget(&staged).await.map_err(OutboxError::Delete)?;
        Ok(staged.len())
    }

    /// Publishes what a committed transaction staged, without deleting the rows yet (see
    /// [`Outbox::forget`]): the messages of each cause under the span given for it (the
    /// current span where none is), so a trace shows what each consumed message forwarded. All
    /// sends are queued at once, in staging order, so the order per key is kept.
    pub async fn send_under(
        &self,
        staged: &Staged,
        spans: &[tracing::Span],
    ) -> Result<(), PublishError> {
        let mut per_cause: Vec<Vec<OutgoingMessage>> = Vec::new();
        for (cause, message) in &staged.messages {
            if per_cause.len() <= *cause {
                per_cause.resize_with(cause + 1, Vec::new);
            }
            per_cause[*cause].push(message.clone());
        }
        try_join_all(
            per_cause
                .iter()
                .enumerate()
                .filter(|(_, messages)| !messages.is_empty())
                .map(|(cause, messages)| {
                    let span = spans
                        .get(cause)
                        .cloned()
                        .unwrap_or_else(tracing::Span::current);
                    self.publisher.publish_all(messages).instrument(span)
                }),
        )
        .await?;
        Ok(())
    }

    /// Deletes the rows of messages Kafka acknowledged. Rows a failed delete leaves are published
    /// again by the relay.
    pub async fn forget(&self, staged: &Staged) -> Result<u64, sqlx::Error> {
        table::delete(&self.pool, &staged.ids).await
    }

    /// Publishes whatever the given changes (batch ids) left in the outbox, read back: what an
    /// interrupted attempt at the same changes staged and committed but did not publish.
    pub async fn publish_batches(&self, batch_ids: &[&str]) -> Result<usize, OutboxError> {
        let rows = table::fetch_batches(&self.pool, batch_ids)
            .await
            .map_err(OutboxError::Read)?;
        self.publish_rows(&rows).await
    }

    async fn publish_rows(&self, rows: &[table::Staged]) -> Result<usize, OutboxError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let staged = Staged {
            ids: rows.iter().map(|r| r.id).collect(),
            messages: rows
                .iter()
                .map(|r| {
                    let message = Pending {
                        topic: r.topic.clone(),
                        key: r.message_key.clone(),
                        message_id: r.message_id.clone(),
                        payload: r.payload.clone(),
                    };
                    (0, outgoing(message))
                })
                .collect(),
        };
        self.publish(staged).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::FutureProducer;

    use super::*;
    use crm_sync_kafka::connection::ReportingContext;

    fn message(key: &str, id: &str) -> (usize, OutgoingMessage) {
        let pending = Pending {
            topic: "activities".into(),
            key: key.into(),
            message_id: id.into(),
            payload: id.as_bytes().to_vec(),
        };
        (0, outgoing(pending))
    }

    /// What the topic holds: (key, event id header) in offset order, over every partition.
    fn read_back(bootstrap: &str, expected: usize) -> Vec<(String, String)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "outbox-test")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&["activities"]).unwrap();
        let mut read = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while read.len() < expected && std::time::Instant::now() < deadline {
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let id = m
                .headers()
                .and_then(|h| {
                    h.iter()
                        .find(|h| h.key == crm_sync_kafka::headers::EVENT_ID)
                })
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            read.push((String::from_utf8_lossy(m.key().unwrap()).into_owned(), id));
        }
        read
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_several_causes_staged_is_published_once_each_in_staging_order_per_key() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("activities", 1, 1).unwrap();
        let producer: FutureProducer<ReportingContext> = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create_with_context(ReportingContext)
            .unwrap();
        let outbox = Outbox::new(
            PgPool::connect_lazy("postgres://unused@127.0.0.1:1/unused").unwrap(),
            Publisher::new(producer),
        );
        // Two consumed messages (causes 0 and 1) forwarded interleaved, on two keys.
        let mut staged = Staged::default();
        for (cause, key, id) in [
            (0, "a", "a1"),
            (1, "b", "b1"),
            (0, "a", "a2"),
            (1, "b", "b2"),
        ] {
            let (_, m) = message(key, id);
            staged.ids.push(staged.ids.len() as i64);
            staged.messages.push((cause, m));
        }
        let spans = [tracing::info_span!("first"), tracing::info_span!("second")];
        outbox.send_under(&staged, &spans).await.unwrap();
        let read = read_back(&cluster.bootstrap_servers(), 4);
        let of = |key: &str| -> Vec<&str> {
            read.iter()
                .filter(|(k, _)| k == key)
                .map(|(_, id)| id.as_str())
                .collect()
        };
        assert_eq!(read.len(), 4, "{read:?}");
        assert_eq!(of("a"), ["a1", "a2"]);
        assert_eq!(of("b"), ["b1", "b2"]);
    }
}
