//! Record state at scale, on a real broker: how fast a changelog partition is restored into the
//! local store and how much memory the evaluator process holds meanwhile.
//!
//!   cargo run --release -p crm-sync-workflow-evaluator --example state_bench -- produce 5000000
//!   cargo run --release -p crm-sync-workflow-evaluator --example state_bench -- restore <topic> [MiB]
//!
//! `produce` writes N realistic record states (a HubSpot deal: ten fields, an owner, one match)
//! to a new compacted single-partition topic and prints its name; `restore` restores that topic
//! into a fresh local store (the evaluator's own code path) in a separate process, so the figure
//! is the restore's alone, and prints records/s, the peak RSS and the size of its tables on
//! disk (the journal left out). `MiB` is the store's memory budget
//! (`evaluator.state_memory_mib`), 64 unless given.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

// As the evaluator's binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crm_sync_proto::Message;
use crm_sync_proto::v1::{
    CrmUser, FieldValue, KnownField, RecordState, WorkflowMatchState, field_value,
};
use crm_sync_proto::{Timestamp, timestamp_from_millis};
use crm_sync_workflow_evaluator::restore::Source;
use crm_sync_workflow_evaluator::store::RecordStore;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

fn brokers() -> String {
    std::env::var("CRM_SYNC_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn state(i: u64) -> RecordState {
    let text = |s: String| FieldValue {
        kind: Some(field_value::Kind::Text(s)),
    };
    let at = Some(timestamp_from_millis(1_795_000_000_000 + i as i64));
    let fields = [
        ("dealname", format!("Acme renewal {i}")),
        ("amount", format!("{}", 1000 + i % 9000)),
        (
            "dealstage",
            if i.is_multiple_of(7) {
                "closedwon"
            } else {
                "appointmentscheduled"
            }
            .to_owned(),
        ),
        ("pipeline", "default".to_owned()),
        ("closedate", "2026-11-20T10:00:00Z".to_owned()),
        ("hubspot_owner_id", format!("{}", 41_000_000 + i % 500)),
        ("hs_priority", "medium".to_owned()),
        ("dealtype", "newbusiness".to_owned()),
        ("createdate", "2026-10-01T09:00:00Z".to_owned()),
        ("hs_lastmodifieddate", "2026-11-20T10:00:00Z".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| {
        (
            k.to_owned(),
            KnownField {
                value: Some(text(v)),
                set_at: at,
            },
        )
    })
    .collect();
    RecordState {
        integration_id: "3f1c9a52-6f0e-4f5e-9d8b-2a7c1e0b4d11".into(),
        object_type: "deal".into(),
        record_id: i.to_string(),
        fields,
        owner: Some(CrmUser {
            crm_user_id: format!("{}", 41_000_000 + i % 500),
            ..Default::default()
        }),
        matches: if i.is_multiple_of(7) {
            vec![WorkflowMatchState {
                workflow_id: "7d1b3c1e-2b1a-4c55-8f0e-1a2b3c4d5e6f".into(),
                value: format!("{}", 1000 + i % 9000),
                activity_date: Some(Timestamp {
                    seconds: 1_795_000_000,
                    nanos: 0,
                }),
                owner_crm_user_id: format!("{}", 41_000_000 + i % 500),
            }]
        } else {
            Vec::new()
        },
        updated_at: at,
        ..Default::default()
    }
}

async fn produce(n: u64) {
    let topic = format!("bench.state.{}.crm.records.v1", std::process::id());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let new = NewTopic::new(&topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    admin
        .create_topics(&[new], &AdminOptions::new())
        .await
        .unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .create()
        .unwrap();
    let started = Instant::now();
    for i in 0..n {
        let key = format!("3f1c9a52-6f0e-4f5e-9d8b-2a7c1e0b4d11/deal/{i}");
        let payload = state(i).encode_to_vec();
        let mut record = BaseRecord::to(&topic)
            .key(&key)
            .payload(&payload)
            .partition(0);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    let size = state(1).encode_to_vec().len();
    println!(
        "produced {n} record states (~{size} bytes each) to {topic} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Bytes of the files under `dir` (the store's tables, without its journal).
fn bytes_under(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

async fn restore(topic: &str, memory_mib: u64) {
    let dir = std::env::temp_dir().join(format!("state-bench-{}", std::process::id()));
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers());
    let source = Source::new(config, topic);
    let (store, _wakes) =
        RecordStore::open(&dir, memory_mib * 1024 * 1024, source, "input").unwrap();
    let started = Instant::now();
    store.ready(0).await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let probe = Instant::now();
    for i in (0..10_000u64).map(|i| i * 397) {
        let key = format!("3f1c9a52-6f0e-4f5e-9d8b-2a7c1e0b4d11/deal/{i}");
        std::hint::black_box(store.get(0, key.as_bytes()).unwrap());
    }
    let reads = probe.elapsed().as_secs_f64();
    let records = crm_sync_proto::Message::encoded_len(&state(1));
    println!(
        "restored {topic} in {seconds:.1} s; peak RSS {:.0} MiB; 10,000 random reads in {:.0} ms; record ~{records} bytes; tables {:.0} MiB on disk",
        rss_mib(),
        reads * 1000.0,
        bytes_under(&dir.join("keyspaces")) as f64 / (1024.0 * 1024.0)
    );
    println!("(records/s: divide the produced count by the restore time)");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("produce") => {
            produce(
                args.get(2)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1_000_000),
            )
            .await
        }
        Some("restore") => {
            let memory_mib = args
                .get(3)
                .map_or(64, |m| m.parse().expect("MiB: a number"));
            restore(args.get(2).expect("restore <topic>"), memory_mib).await
        }
        _ => eprintln!("usage: state_bench produce N | restore TOPIC [MiB]"),
    }
}
