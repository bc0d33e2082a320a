//! `crm-sync dlq list|inspect|replay --topic <topic>.dlq`: the operator's view of dead letters.
//!
//! - `list` prints one line per dead letter: where it sits, why it died, where it came from.
//! - `inspect P/O` (the position as `list` prints it; or `--partition P --offset O`) prints one
//!   dead letter whole (headers, decoded value).
//! - `replay` sends dead letters back to the topic they came from (original key, bytes and
//!   headers, without the dead-letter headers), optionally only those with a given reason or at
//!   one position; `--dry-run` shows what it would send. Consumers deduplicate by event id, so a
//!   replay of something that was in fact processed changes nothing.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use crm_sync_kafka::clients::{Role, base_config};
use crm_sync_kafka::headers as h;
use crm_sync_kafka::{OutgoingMessage, Publisher};
use crm_sync_runtime::settings::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use crate::context::Context;
use crate::kafka_topics;
use crate::transcode::TopicType;

/// Where a dead letter sits, written `PARTITION/OFFSET` as `list` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

impl From<(i32, i64)> for Position {
    fn from((partition, offset): (i32, i64)) -> Self {
        Position { partition, offset }
    }
}

impl std::str::FromStr for Position {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = s.split_once('/').and_then(|(p, o)| {
            let partition = p.trim().parse::<i32>().ok().filter(|p| *p >= 0)?;
            let offset = o.trim().parse::<i64>().ok().filter(|o| *o >= 0)?;
            Some(Position { partition, offset })
        });
        parsed.ok_or_else(|| {
            format!("expected PARTITION/OFFSET as `dlq list` prints it (e.g. 4/0), got `{s}`")
        })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", self.partition, self.offset)
    }
}

pub enum DlqCommand {
    List,
    Inspect {
        at: Position,
    },
    Replay {
        reason: Option<String>,
        partition: Option<i32>,
        offset: Option<i64>,
        dry_run: bool,
    },
}

pub async fn run(ctx: &Context, topic: &str, command: DlqCommand) -> anyhow::Result<()> {
    let mut topic = ctx.resolve_topic(topic);
    if !topic.ends_with(".dlq") {
        topic.push_str(".dlq");
    }
    let kafka = ctx.settings.kafka.clone();
    let letters = {
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || read_all(&kafka, &topic))
            .await
            .context("reading the dead-letter topic")??
    };
    match command {
        DlqCommand::List => list(&topic, &letters),
        DlqCommand::Inspect { at } => {
            let m = letters
                .iter()
                .find(|m| Position::from((m.partition(), m.offset())) == at)
                .with_context(|| format!("no dead letter at {at} in {topic}"))?;
            let kind = TopicType::for_topic(&topic).ok();
            let rendered = super::consume::render(m, kind.as_ref());
            println!("{}", serde_json::to_string_pretty(&rendered)?);
        }
        DlqCommand::Replay {
            reason,
            partition,
            offset,
            dry_run,
        } => {
            let chosen: Vec<&OwnedMessage> = letters
                .iter()
                .filter(|m| {
                    reason
                        .as_deref()
                        .is_none_or(|r| header(m, h::DLQ_REASON).as_deref() == Some(r))
                })
                .filter(|m| partition.is_none_or(|p| m.partition() == p))
                .filter(|m| offset.is_none_or(|o| m.offset() == o))
                .collect();
            // A choice that matches nothing is most likely mistyped: say so, and fail, rather
            // than report zero replayed as a success.
            if chosen.is_empty() && (reason.is_some() || partition.is_some()) {
                let what = match (partition, offset) {
                    (Some(p), Some(o)) => format!(" at {}", Position::from((p, o))),
                    (Some(p), None) => format!(" in partition {p}"),
                    _ => String::new(),
                };
                let why = reason
                    .map(|r| format!(" with reason {r}"))
                    .unwrap_or_default();
                anyhow::bail!(
                    "no dead letter{what}{why} in {topic} ({} in all)",
                    letters.len()
                );
            }
            replay(ctx, &topic, &chosen, letters.len(), dry_run).await?;
        }
    }
    Ok(())
}

/// One line per dead letter: where it is, why, and where it came from.
fn list(topic: &str, letters: &[OwnedMessage]) {
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|m| {
            let header = |k| header(m, k).unwrap_or_default();
            vec![
                Position::from((m.partition(), m.offset())).to_string(),
                header(h::DLQ_REASON),
                format!(
                    "{}/{}/{}",
                    header(h::DLQ_ORIGIN_TOPIC),
                    header(h::DLQ_ORIGIN_PARTITION),
                    header(h::DLQ_ORIGIN_OFFSET)
                ),
                header(h::DLQ_SERVICE),
                header(h::DLQ_TIME),
                header(h::DLQ_DETAIL),
            ]
        })
        .collect();
    let headers = ["POSITION", "REASON", "ORIGIN", "SERVICE", "TIME", "DETAIL"];
    print!("{}", crate::table::render(&headers, &rows));
    eprintln!("{} dead letters in {topic}", letters.len());
}

/// Sends the chosen dead letters back to their original topics (or only says which would go).
async fn replay(
    ctx: &Context,
    topic: &str,
    chosen: &[&OwnedMessage],
    total: usize,
    dry_run: bool,
) -> anyhow::Result<()> {
    // A letter cut to fit would send its first bytes as if they were the message.
    let (chosen, cut): (Vec<&OwnedMessage>, Vec<&OwnedMessage>) = chosen
        .iter()
        .partition(|m| header(m, h::DLQ_TRUNCATED_FROM).is_none());
    for m in cut {
        eprintln!(
            "skipping {}/{}: it keeps only the first {} of the message's {} bytes; the whole message is at {}/{}/{} while the topic's retention keeps it",
            m.partition(),
            m.offset(),
            m.payload().map_or(0, <[u8]>::len),
            header(m, h::DLQ_TRUNCATED_FROM).unwrap_or_default(),
            header(m, h::DLQ_ORIGIN_TOPIC).unwrap_or_default(),
            header(m, h::DLQ_ORIGIN_PARTITION).unwrap_or_default(),
            header(m, h::DLQ_ORIGIN_OFFSET).unwrap_or_default(),
        );
    }
    let messages: Vec<OutgoingMessage> = chosen.iter().map(|m| to_origin(m, topic)).collect();
    for (m, out) in chosen.iter().zip(&messages) {
        println!(
            "{} {}/{} -> {} key {}",
            if dry_run { "would replay" } else { "replaying" },
            m.partition(),
            m.offset(),
            out.topic,
            out.key
        );
    }
    if !dry_run && !messages.is_empty() {
        let producer = crm_sync_kafka::clients::producer(&ctx.settings.kafka, "crm-sync-cli")?;
        Publisher::new(producer)
            .publish_all(&messages)
            .await
            .context("replaying dead letters")?;
    }
    eprintln!(
        "{} {} of {} dead letters",
        if dry_run { "would replay" } else { "replayed" },
        messages.len(),
        total
    );
    Ok(())
}

fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|x| x.key == key)
        .and_then(|x| x.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The original message: origin topic, key and bytes, its own headers without the dead-letter ones.
fn to_origin(m: &OwnedMessage, dlq_topic: &str) -> OutgoingMessage {
    let origin = header(m, h::DLQ_ORIGIN_TOPIC)
        .unwrap_or_else(|| dlq_topic.trim_end_matches(".dlq").to_owned());
    let headers: Vec<(String, String)> = m
        .headers()
        .map(|hs| {
            hs.iter()
                .filter(|x| !x.key.starts_with("crm-sync-dlq-") && x.key != h::EVENT_ID)
                .filter_map(|x| {
                    Some((
                        x.key.to_owned(),
                        String::from_utf8_lossy(x.value?).into_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    OutgoingMessage {
        topic: origin.into(),
        key: String::from_utf8_lossy(m.key().unwrap_or_default()).into(),
        payload: m.payload().unwrap_or_default().to_vec(),
        event_id: header(m, h::EVENT_ID).unwrap_or_default(),
        headers,
        partition: None,
    }
}

/// Every record of the topic up to its current end, without joining a consumer group.
fn read_all(kafka: &KafkaSettings, topic: &str) -> anyhow::Result<Vec<OwnedMessage>> {
    let brokers = &kafka.brokers;
    let consumer: BaseConsumer = base_config(kafka, Role::Consumer)
        .set("group.id", "crm-sync-cli-dlq")
        .set("enable.auto.commit", "false")
        // The evaluator dead-letters inside its Kafka transactions: show only committed letters.
        .set("isolation.level", "read_committed")
        .create()
        .with_context(|| format!("creating a Kafka consumer for {brokers}"))?;
    let partitions = kafka_topics::partitions(consumer.client(), topic, brokers)?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("reading the offsets of {topic}/{p}"))?;
        if high > low {
            assignment.add_partition_offset(topic, p, Offset::Offset(low))?;
            ends.push((p, high));
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut remaining = ends.clone();
    while !remaining.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "reading {topic} did not reach its end within 30 s"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let (p, o) = (m.partition(), m.offset());
                out.push(m.detach());
                remaining.retain(|(rp, high)| !(*rp == p && o + 1 >= *high));
            }
            Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
            // Transaction markers take offsets but are never delivered: the position tells
            // when a partition has been read to its end.
            None => {
                if let Ok(positions) = consumer.position() {
                    for e in positions.elements() {
                        if let Offset::Offset(at) = e.offset() {
                            remaining.retain(|(rp, high)| !(*rp == e.partition() && at >= *high));
                        }
                    }
                }
            }
        }
    }
    out.sort_by_key(|m| (m.partition(), m.offset()));
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Position;

    #[test]
    fn a_position_reads_as_list_prints_it() {
        let p: Position = "4/17".parse().unwrap();
        assert_eq!(p, Position::from((4, 17)));
        assert_eq!(p.to_string(), "4/17");
        for bad in ["4", "4/", "/0", "a/0", "4/-1", "-1/0"] {
            let e = bad.parse::<Position>().unwrap_err();
            assert!(e.contains("PARTITION/OFFSET") && e.contains(bad), "{e}");
        }
    }
}
