//! The faults, injected at seeded random times while the events flow.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crm_sync_e2e::TestEnv;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::Options;
use crate::fleet::Fleets;

/// What was injected: the faults in order, and the event ids of the poison messages.
#[derive(Default)]
pub struct Injected {
    pub log: Vec<String>,
    pub poison_ids: HashSet<String>,
}

/// Every fault not skipped, in an order the seed fixes.
fn plan(o: &Options, rng: &mut StdRng) -> Vec<&'static str> {
    let mut plan: Vec<&str> = vec![
        "kill ingest",
        "kill ingest",
        "kill workflow-evaluator",
        "kill workflow-evaluator",
        "kill provisioner",
        "kill provisioner",
        "restart kafka",
        "restart postgres",
        "scale workflow-evaluator",
        "scale provisioner",
        "poison",
        "poison",
        "poison",
    ];
    plan.retain(|f| !o.skip.iter().any(|s| s == f));
    // Shuffle (Fisher-Yates with the seeded generator, so a seed reproduces the run).
    for i in (1..plan.len()).rev() {
        let j = rng.random_range(0..=i);
        plan.swap(i, j);
    }
    plan
}

/// Injects the plan's faults spread over the time the events take to send.
pub async fn inject(
    env: &TestEnv,
    fleets: &mut Fleets,
    o: &Options,
    started: Instant,
    stack: &Path,
) -> Injected {
    let mut rng = StdRng::seed_from_u64(o.seed);
    let send_secs = o.events as f64 / o.rate;
    let plan = plan(o, &mut rng);
    let gap = Duration::from_secs_f64((send_secs / plan.len() as f64).max(0.5));
    let mut injected = Injected::default();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    for fault in plan {
        tokio::time::sleep(gap.mul_f64(rng.random_range(0.5..1.5))).await;
        let at = started.elapsed().as_secs_f64();
        match fault {
            "kill ingest" => fleets.ingest.kill_one(env, &mut rng).await,
            "kill workflow-evaluator" => fleets.evaluators.kill_one(env, &mut rng).await,
            "kill provisioner" => fleets.provisioners.kill_one(env, &mut rng).await,
            "restart kafka" => run_stack(stack, "restart-kafka").await,
            "restart postgres" => run_stack(stack, "restart-postgres").await,
            "scale workflow-evaluator" => {
                fleets.evaluators.scale_to(env, 3).await;
                tokio::time::sleep(gap).await;
                fleets.evaluators.scale_to(env, 1).await;
            }
            "scale provisioner" => {
                fleets.provisioners.scale_to(env, 3).await;
                tokio::time::sleep(gap).await;
                fleets.provisioners.scale_to(env, 1).await;
            }
            "poison" => poison(env, &producer, &mut rng, &mut injected.poison_ids).await,
            _ => unreachable!(),
        }
        println!("  {at:7.1}s  {fault}");
        injected.log.push(fault.to_owned());
    }
    injected
}

/// A message no consumer can decode on the events and the matches topics each.
async fn poison(
    env: &TestEnv,
    producer: &FutureProducer,
    rng: &mut StdRng,
    poison_ids: &mut HashSet<String>,
) {
    for topic in [&env.topics.events, &env.topics.matches] {
        let id = format!("poison-{}", poison_ids.len());
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "crm-sync-event-id",
            value: Some(id.as_bytes()),
        });
        let garbage: Vec<u8> = (0..32).map(|_| rng.random::<u8>() | 0x80).collect();
        producer
            .send(
                FutureRecord::to(topic)
                    .key(&id)
                    .payload(&garbage)
                    .headers(headers),
                Duration::from_secs(60),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("injecting a poison message");
        poison_ids.insert(id);
    }
}

async fn run_stack(script: &Path, command: &str) {
    let status = tokio::process::Command::new("bash")
        .arg(script)
        .arg(command)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "stack.sh {command} failed");
}
