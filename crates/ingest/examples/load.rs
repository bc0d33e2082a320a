//! Load generator for ingest alone (`tests/load/ingest.sh` runs it): Salesforce Outbound Messages
//! of N notifications, or single HubSpot events signed with `X-HubSpot-Signature-v3`, sent by
//! C concurrent connections for a fixed time. Reports requests/s, notifications/s and latency
//! percentiles of accepted requests.
//!
//! `load setup` prepares a database and topic (company, a Salesforce and a HubSpot integration);
//! `load run` sends. Only ever pointed at 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use crm_sync_store::credentials::{IntegrationSecrets, SecretKey};
use crm_sync_store::tenants::{self, IntegrationInput};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Migrates the database, creates the tenant and the events topic; prints the integration ids.
    Setup {
        #[arg(long)]
        database_url: String,
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        #[arg(long)]
        encryption_key: String,
    },
    /// Deletes the events topic (the run's messages take disk space, and a fresh topic keeps
    /// runs comparable).
    Teardown {
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long)]
        topic: String,
    },
    /// Sends load and prints the results.
    Run {
        #[arg(long, value_enum)]
        mode: Mode,
        /// ingest's address, e.g. http://127.0.0.1:18080
        #[arg(long)]
        url: String,
        #[arg(long)]
        integration_id: String,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Notifications per Salesforce message.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Every Salesforce notification names a record never seen before (so every request
        /// writes its owners); by default 256 prepared messages are sent in turn.
        #[arg(long)]
        fresh_records: bool,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Mode {
    Salesforce,
    Hubspot,
}

const ORG: &str = "00D5g000004LOADAAA";
const TOKEN: &str = "load-test-token";
const PORTAL: &str = "62515";
const HUBSPOT_SECRET: &str = "load-test-hubspot-secret";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup {
            database_url,
            brokers,
            topic,
            partitions,
            encryption_key,
        } => setup(&database_url, &brokers, &topic, partitions, &encryption_key).await,
        Command::Teardown { brokers, topic } => teardown(&brokers, &topic).await,
        Command::Run {
            mode,
            url,
            integration_id,
            seconds,
            concurrency,
            batch,
            fresh_records,
        } => {
            anyhow::ensure!(
                url.starts_with("http://127.0.0.1:"),
                "the load run only targets 127.0.0.1"
            );
            let settings = RunSettings {
                mode,
                seconds,
                concurrency,
                batch,
                fresh_records,
            };
            run(&settings, &url, &integration_id).await
        }
    }
}

async fn setup(
    database_url: &str,
    brokers: &str,
    topic: &str,
    partitions: i32,
    encryption_key: &str,
) -> anyhow::Result<()> {
    let pool = crm_sync_store::pool(database_url, 2, Duration::from_secs(10))?;
    crm_sync_store::migrate(&pool).await?;
    crm_sync_kafka::admin::ensure_topics(
        &crm_sync_runtime::settings::KafkaSettings::for_brokers(brokers),
        &[topic.to_owned()],
        partitions,
    )
    .await?;
    let company = tenants::upsert_company(&pool, None, "load", "Load Test Inc").await?;
    let integration =
        |name: &str, crm: &str, account: &str, token: Option<&str>| IntegrationInput {
            id: None,
            company_id: company,
            name: name.into(),
            crm: crm.into(),
            crm_account_id: account.into(),
            auto_sync_users: true,
            webhook_token: token.map(str::to_owned),
        };
    let salesforce = tenants::upsert_integration(
        &pool,
        &integration("salesforce", "salesforce", ORG, Some(TOKEN)),
    )
    .await?;
    let hubspot =
        tenants::upsert_integration(&pool, &integration("hubspot", "hubspot", PORTAL, None))
            .await?;
    crm_sync_store::credentials::update(
        &pool,
        &SecretKey::parse(encryption_key)?,
        company,
        hubspot,
        IntegrationSecrets {
            webhook_secret: Some(HUBSPOT_SECRET.into()),
            ..IntegrationSecrets::default()
        },
    )
    .await?;
    println!("SALESFORCE_INTEGRATION={salesforce}");
    println!("HUBSPOT_INTEGRATION={hubspot}");
    Ok(())
}

#[derive(Clone, Copy)]
struct RunSettings {
    mode: Mode,
    seconds: u64,
    concurrency: usize,
    batch: usize,
    fresh_records: bool,
}

/// `records` is how many distinct records the notifications cycle through.
async fn teardown(brokers: &str, topic: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let results = admin
        .delete_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await?;
    for result in results {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((name, code)) => anyhow::bail!("deleting topic {name}: {code}"),
        }
    }
    // Deletion is asynchronous: wait until the broker no longer knows the topic, so that the
    // next setup creates a fresh one.
    let client: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer as _;
        for _ in 0..60 {
            let gone = client
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .map(|m| {
                    m.topics()
                        .iter()
                        .all(|t| t.error().is_some() || t.partitions().is_empty())
                })
                .unwrap_or(false);
            if gone {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        anyhow::bail!("topic {topic} still exists 30 s after its deletion")
    })
    .await?
}

fn salesforce_message(seq: u64, batch: usize, records: u64) -> String {
    let mut xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{ORG}</OrganizationId>
   <ActionId>04k5g000000XYZAAA2</ActionId>
   <SessionId xsi:nil="true"/>
"#
    );
    for i in 0..batch {
        let n = seq * batch as u64 + i as u64;
        xml.push_str(&format!(
            r#"   <Notification><Id>04l{n:015}</Id><sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com"><sf:Id>006{:015}</sf:Id><sf:Amount>1250.50</sf:Amount><sf:CloseDate>2026-11-20</sf:CloseDate><sf:CreatedDate>2026-11-01T09:00:00.000Z</sf:CreatedDate><sf:LastModifiedDate>2026-11-20T15:04:05.000Z</sf:LastModifiedDate><sf:Name>Acme - 200 licenses</sf:Name><sf:OwnerId>0055g0000000{:03}AAA</sf:OwnerId><sf:StageName>Closed Won</sf:StageName></sObject></Notification>
"#,
            n % records,
            n % 50
        ));
    }
    xml.push_str("  </notifications>\n </soapenv:Body>\n</soapenv:Envelope>\n");
    xml
}

fn hubspot_event(seq: u64) -> String {
    format!(
        r#"[{{"eventId":{seq},"subscriptionId":2456,"portalId":{PORTAL},"appId":1160452,"occurredAt":1795187045000,"subscriptionType":"deal.propertyChange","attemptNumber":0,"objectId":{},"propertyName":"dealstage","propertyValue":"closedwon","changeSource":"CRM_UI"}}]"#,
        100_000 + seq % 100_000
    )
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
}

async fn run(settings: &RunSettings, base: &str, integration_id: &str) -> anyhow::Result<()> {
    let RunSettings {
        mode,
        seconds,
        concurrency,
        batch,
        ..
    } = *settings;
    let (path, per_request) = match mode {
        Mode::Salesforce => (
            format!("/v1/integrations/{integration_id}/salesforce/outbound-messages?token={TOKEN}"),
            batch,
        ),
        Mode::Hubspot => (
            format!("/v1/integrations/{integration_id}/hubspot/webhooks"),
            1,
        ),
    };
    // Bodies are built before the clock starts: the generator should measure ingest, not itself.
    let bodies: Vec<String> = (0..256)
        .map(|seq| match mode {
            Mode::Salesforce => salesforce_message(seq, batch, 100_000),
            Mode::Hubspot => hubspot_event(seq),
        })
        .collect();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let started = Instant::now();
    let sender = Arc::new(Sender {
        settings: *settings,
        client,
        url: format!("{base}{path}"),
        bodies,
        deadline: started + Duration::from_secs(seconds),
    });
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| tokio::spawn(sender.clone().send_until_deadline(worker)))
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await?;
        all.latencies_us.extend(t.latencies_us);
        for (status, n) in t.statuses {
            *all.statuses.entry(status).or_default() += n;
        }
        all.transport_errors += t.transport_errors;
    }
    report(settings, per_request, started.elapsed().as_secs_f64(), all);
    Ok(())
}

/// What every worker sends to, and until when.
struct Sender {
    settings: RunSettings,
    client: reqwest::Client,
    url: String,
    bodies: Vec<String>,
    deadline: Instant,
}

impl Sender {
    /// One worker: requests one after another until the deadline.
    async fn send_until_deadline(self: Arc<Self>, worker: usize) -> Tally {
        let RunSettings {
            mode,
            concurrency,
            batch,
            fresh_records,
            ..
        } = self.settings;
        let mut tally = Tally::default();
        let mut i = worker;
        while Instant::now() < self.deadline {
            let body = if fresh_records && mode == Mode::Salesforce {
                salesforce_message(1_000_000 + i as u64, batch, u64::MAX)
            } else {
                self.bodies[i % self.bodies.len()].clone()
            };
            i += concurrency;
            let request = self.request(&body);
            let sent = Instant::now();
            match request.body(body).send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let _ = response.bytes().await;
                    *tally.statuses.entry(status).or_default() += 1;
                    if status == 200 {
                        tally.latencies_us.push(sent.elapsed().as_micros() as u64);
                    }
                }
                Err(_) => tally.transport_errors += 1,
            }
        }
        tally
    }

    /// The request with the headers its CRM sends (HubSpot's signed).
    fn request(&self, body: &str) -> reqwest::RequestBuilder {
        let request = self.client.post(&self.url);
        match self.settings.mode {
            Mode::Salesforce => request
                .header("content-type", "text/xml; charset=utf-8")
                .header("soapaction", "\"\""),
            Mode::Hubspot => {
                let timestamp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_millis()
                    .to_string();
                let signature = crm_sync_ingest::hubspot::signature::sign(
                    HUBSPOT_SECRET.as_bytes(),
                    "POST",
                    &self.url,
                    body.as_bytes(),
                    &timestamp,
                );
                request
                    .header("content-type", "application/json")
                    .header("x-hubspot-request-timestamp", timestamp)
                    .header("x-hubspot-signature-v3", signature)
            }
        }
    }
}

fn report(settings: &RunSettings, per_request: usize, elapsed: f64, mut all: Tally) {
    let RunSettings {
        mode,
        concurrency,
        batch,
        fresh_records,
        ..
    } = *settings;
    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((all.latencies_us.len() as f64 * p).ceil() as usize)
            .clamp(1, all.latencies_us.len())
            - 1;
        all.latencies_us[i] as f64 / 1000.0
    };
    let ok = all.latencies_us.len() as f64;
    let mode_name = match mode {
        Mode::Salesforce if fresh_records => {
            format!("salesforce outbound messages, {batch} notifications each, every record new")
        }
        Mode::Salesforce => format!("salesforce outbound messages, {batch} notifications each"),
        Mode::Hubspot => "hubspot single-event batches".to_owned(),
    };
    println!("mode:            {mode_name}");
    println!("concurrency:     {concurrency}");
    println!("duration:        {elapsed:.1} s");
    println!("accepted:        {} requests", ok as u64);
    println!(
        "statuses:        {:?} transport errors: {}",
        all.statuses, all.transport_errors
    );
    println!("requests/s:      {:.0}", ok / elapsed);
    println!("notifications/s: {:.0}", ok * per_request as f64 / elapsed);
    println!(
        "latency ms:      p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );
}
