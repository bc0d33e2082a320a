//! `crm-sync produce --topic T [--file events.jsonl] [--key K]`: JSON lines (proto3 JSON of the
//! topic's message type) to protobuf records, acknowledged by Kafka. Every line is validated
//! before the first record is sent, so a bad line means nothing was produced.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context as _;
use crm_sync_kafka::{OutgoingMessage, Publisher, clients};
use rdkafka::producer::Producer as _;

use crate::context::Context;
use crate::kafka_topics;
use crate::transcode::TopicType;

pub struct ProduceArgs {
    pub topic: String,
    pub file: Option<PathBuf>,
    pub key: Option<String>,
}

#[derive(Debug)]
pub struct Prepared {
    pub messages: Vec<OutgoingMessage>,
    /// (line number, generated id) for messages that came without an id.
    pub generated_ids: Vec<(usize, String)>,
}

/// Turns the input into records; `source` names the input in errors (a path or `stdin`).
pub fn prepare(
    topic: &str,
    source: &str,
    input: &str,
    key: Option<&str>,
) -> anyhow::Result<Prepared> {
    let kind = TopicType::for_topic(topic)?;
    let mut messages = Vec::new();
    let mut generated_ids = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let n = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut message = kind.from_json(line).map_err(|e| {
            anyhow::anyhow!(
                "{source} line {n}: not a valid {} in JSON: {e}",
                kind.name()
            )
        })?;
        let mut id = kind.text_field(&message, kind.id_field);
        if id.is_empty() {
            if !kind.generate_missing_id {
                anyhow::bail!(
                    "{source} line {n}: `{}` is empty; {} ids are deterministic and consumers \
                     deduplicate on them, so give one",
                    kind.id_field,
                    kind.name()
                );
            }
            id = uuid::Uuid::new_v4().to_string();
            message.set_field_by_name(kind.id_field, prost_reflect::Value::String(id.clone()));
            generated_ids.push((n, id.clone()));
        }
        let record_key = match key {
            Some(k) => k.to_owned(),
            None => kind.key_of(&message).map_err(|field| {
                anyhow::anyhow!(
                    "{source} line {n}: cannot derive the record key ({}): `{field}` is empty; \
                     set it or pass --key",
                    kind.key_fields.join("/")
                )
            })?,
        };
        messages.push(OutgoingMessage {
            topic: topic.into(),
            key: record_key.into(),
            payload: kind.encode(&message),
            event_id: id,
            headers: Vec::new(),
            partition: None,
        });
    }
    Ok(Prepared {
        messages,
        generated_ids,
    })
}

pub async fn run(ctx: &Context, args: ProduceArgs) -> anyhow::Result<()> {
    let topic = ctx.resolve_topic(&args.topic);
    let (source, input) = match &args.file {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading JSON lines from stdin")?;
            ("stdin".to_owned(), text)
        }
    };
    let prepared = prepare(&topic, &source, &input, args.key.as_deref())?;
    for (line, id) in &prepared.generated_ids {
        eprintln!("{source} line {line}: no event_id given, generated {id}");
    }
    if prepared.messages.is_empty() {
        println!("nothing to produce: {source} has no JSON lines");
        return Ok(());
    }

    let producer = clients::producer(&ctx.settings.kafka, "crm-sync-cli")?;
    kafka_topics::partitions(producer.client(), &topic, &ctx.settings.kafka.brokers)?;
    let publisher = Publisher::new(producer);
    // Bounded batches keep librdkafka's queue from filling on large files.
    for chunk in prepared.messages.chunks(1000) {
        publisher
            .publish_all(chunk)
            .await
            .with_context(|| format!("producing to {topic}"))?;
    }
    println!("produced {} messages to {topic}", prepared.messages.len());
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const EVENT: &str =
        r#"{"event_id":"e1","integration_id":"i","object_type":"Opportunity","record_id":"006A"}"#;

    #[test]
    fn keys_and_ids_are_derived() {
        let input = format!(
            "{EVENT}\n\n{}\n",
            r#"{"integration_id":"i","object_type":"Lead","record_id":"00Q"}"#
        );
        let p = prepare("crm.events.v1", "in", &input, None).unwrap();
        assert_eq!(p.messages.len(), 2);
        assert_eq!(&*p.messages[0].key, "i/Opportunity/006A");
        assert_eq!(p.messages[0].event_id, "e1");
        assert_eq!(&*p.messages[1].key, "i/Lead/00Q");
        assert_eq!(p.generated_ids.len(), 1);
        assert_eq!(p.generated_ids[0].0, 3);
        assert_eq!(p.messages[1].event_id, p.generated_ids[0].1);
        let p = prepare("crm.events.v1", "in", EVENT, Some("k")).unwrap();
        assert_eq!(&*p.messages[0].key, "k");
    }

    #[test]
    fn a_bad_line_is_named() {
        let input = format!("{EVENT}\n{{\"event_id\": \n{EVENT}\n");
        let e = prepare("crm.events.v1", "events.jsonl", &input, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("events.jsonl line 2: not a valid crm_sync.v1.CrmEvent"),
            "{e}"
        );
        let e = prepare("crm.events.v1", "in", r#"{"event_id":"e"}"#, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 1") && e.contains("`integration_id` is empty"),
            "{e}"
        );
        let e = prepare(
            "crm.matches.v1",
            "in",
            r#"{"integration_id":"i"}"#,
            Some("k"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`outcome_id` is empty"), "{e}");
    }
}
