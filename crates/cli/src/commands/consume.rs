//! `crm-sync consume --topic T [--from-beginning] [--max N] [--timeout SECS] [--group G]`: one
//! JSON line per record on stdout:
//! `{"topic","partition","offset","key","headers":{..},"value":{..proto3 JSON..}}`.
//!
//! Without `--group` the tool joins no consumer group: it reads every partition directly (from
//! the beginning, or from the end for new records only) and commits nothing. With `--group` it
//! subscribes as that group and commits what it read; `--from-beginning` then applies only when
//! the group has no committed offsets yet, as with Kafka's own console consumer.
//!
//! Dead-letter topics (`*.dlq`) hold the origin topic's bytes and are decoded with its type; a
//! value that does not decode is shown as `value_base64` with `decode_error`, never fatal.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use crm_sync_kafka::clients::{Role, base_config};
use crm_sync_proto::DynamicMessage;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Map, Value, json};

use crate::context::Context;
use crate::kafka_topics;
use crate::transcode::{self, TopicType};

pub struct ConsumeArgs {
    pub topic: String,
    pub from_beginning: bool,
    pub max: Option<u64>,
    pub timeout: Option<u64>,
    pub group: Option<String>,
}

/// How long a subscribed consumer may wait for partitions before the idle timeout starts anyway.
const ASSIGNMENT_GRACE: Duration = Duration::from_secs(30);

pub async fn run(ctx: &Context, args: ConsumeArgs) -> anyhow::Result<()> {
    let topic = ctx.resolve_topic(&args.topic);
    let kind = TopicType::for_topic(&topic).ok();
    if kind.is_none() {
        eprintln!("topic {topic} carries no known crm-sync type: values are shown as base64");
    }
    let brokers = &ctx.settings.kafka.brokers;
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| format!("crm-sync-cli-{}", uuid::Uuid::new_v4()));
    let consumer = create_consumer(ctx, &args, &group)?;
    attach(&consumer, &topic, &args, brokers)?;

    let started = Instant::now();
    let mut last_activity = Instant::now();
    let mut count: u64 = 0;
    let stdout = std::io::stdout();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while args.max.is_none_or(|max| count < max) {
        tokio::select! {
            _ = &mut ctrl_c => break,
            received = tokio::time::timeout(Duration::from_millis(250), consumer.recv()) => {
                match received {
                    Ok(Ok(message)) => {
                        let line = render(&message, kind.as_ref());
                        let mut out = stdout.lock();
                        match writeln!(out, "{line}").and_then(|()| out.flush()) {
                            Ok(()) => {}
                            // The reader went away (e.g. `| head`): stop quietly.
                            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                            Err(e) => return Err(e).context("writing to stdout"),
                        }
                        count += 1;
                        last_activity = Instant::now();
                    }
                    Ok(Err(e)) => return Err(e).with_context(|| format!("consuming from {topic}")),
                    Err(_tick) => {
                        // A group member is not idle before it owns partitions.
                        let waiting_for_assignment = args.group.is_some()
                            && started.elapsed() < ASSIGNMENT_GRACE
                            && consumer.assignment().map(|a| a.count() == 0).unwrap_or(true);
                        if waiting_for_assignment {
                            last_activity = Instant::now();
                        }
                        if args.timeout.is_some_and(|t| last_activity.elapsed() >= Duration::from_secs(t)) {
                            break;
                        }
                    }
                }
            }
        }
    }
    if args.group.is_some() && count > 0 {
        consumer
            .commit_consumer_state(CommitMode::Sync)
            .with_context(|| format!("committing the offsets of group {group}"))?;
    }
    eprintln!("consumed {count} records from {topic}");
    Ok(())
}

/// One record as a JSON object (see the module docs for the shape).
pub fn render<M: Message>(message: &M, kind: Option<&TopicType>) -> Value {
    let mut headers = Map::new();
    if let Some(hs) = message.headers() {
        for h in hs.iter() {
            let value = h.value.map_or(Value::Null, |v| {
                Value::String(String::from_utf8_lossy(v).into_owned())
            });
            headers.insert(h.key.to_owned(), value);
        }
    }
    let mut record = Map::new();
    record.insert("topic".into(), json!(message.topic()));
    record.insert("partition".into(), json!(message.partition()));
    record.insert("offset".into(), json!(message.offset()));
    record.insert(
        "key".into(),
        message.key().map_or(Value::Null, |k| {
            Value::String(String::from_utf8_lossy(k).into_owned())
        }),
    );
    record.insert("headers".into(), Value::Object(headers));
    render_value(message.payload(), kind, &mut record);
    Value::Object(record)
}

fn render_value(payload: Option<&[u8]>, kind: Option<&TopicType>, record: &mut Map<String, Value>) {
    let Some(payload) = payload else {
        record.insert("value".into(), Value::Null);
        return;
    };
    let decoded = match kind {
        Some(kind) => DynamicMessage::decode(kind.descriptor.clone(), payload)
            .map_err(|e| format!("not a {}: {e}", kind.name()))
            .and_then(|m| transcode::to_json(&m).map_err(|e| format!("{e:#}"))),
        None => Err("no known message type for this topic".to_owned()),
    };
    match decoded {
        Ok(value) => {
            record.insert("value".into(), value);
        }
        Err(reason) => {
            record.insert("value".into(), Value::Null);
            record.insert(
                "value_base64".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(payload)),
            );
            record.insert("decode_error".into(), Value::String(reason));
        }
    }
}

/// A consumer of its own group (offsets kept only when the group is named), reading committed
/// records only.
fn create_consumer(
    ctx: &Context,
    args: &ConsumeArgs,
    group: &str,
) -> anyhow::Result<StreamConsumer> {
    let brokers = &ctx.settings.kafka.brokers;
    base_config(&ctx.settings.kafka, Role::Consumer)
        .set("client.id", "crm-sync-cli")
        .set("group.id", group)
        .set(
            "enable.auto.commit",
            if args.group.is_some() {
                "true"
            } else {
                "false"
            },
        )
        .set(
            "auto.offset.reset",
            if args.from_beginning {
                "earliest"
            } else {
                "latest"
            },
        )
        // Transactional writers (the evaluator) must never show aborted data here either.
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .set(
            "session.timeout.ms",
            ctx.settings.kafka.session_timeout_ms.to_string(),
        )
        .create()
        .with_context(|| format!("creating a Kafka consumer for {brokers}"))
}

/// Joins the named group, or takes every partition from the start or the end.
fn attach(
    consumer: &StreamConsumer,
    topic: &str,
    args: &ConsumeArgs,
    brokers: &str,
) -> anyhow::Result<()> {
    let partitions = kafka_topics::partitions(consumer.client(), topic, brokers)?;
    if args.group.is_some() {
        consumer
            .subscribe(&[topic])
            .with_context(|| format!("subscribing to {topic}"))?;
    } else {
        let start = if args.from_beginning {
            Offset::Beginning
        } else {
            Offset::End
        };
        let mut assignment = TopicPartitionList::new();
        for p in partitions {
            assignment
                .add_partition_offset(topic, p, start)
                .with_context(|| format!("assigning {topic}/{p}"))?;
        }
        consumer
            .assign(&assignment)
            .with_context(|| format!("assigning the partitions of {topic}"))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_values_fall_back_to_base64() {
        let kind = TopicType::for_topic("crm.events.v1.dlq").unwrap();
        let mut record = Map::new();
        render_value(Some(&[0xff, 0xff, 0xff]), Some(&kind), &mut record);
        assert_eq!(record["value"], Value::Null);
        assert_eq!(record["value_base64"], json!("////"));
        assert!(
            record["decode_error"]
                .as_str()
                .unwrap()
                .contains("CrmEvent")
        );
        let mut record = Map::new();
        render_value(Some(&[0x0a, 0x01, b'e']), Some(&kind), &mut record);
        assert_eq!(record["value"], json!({"event_id": "e"}));
    }
}
