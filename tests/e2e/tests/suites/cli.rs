//! The `crm-sync` binary against the real local stack: each test points it (through the same
//! `CRM_SYNC__*` environment the services read) at its own database and topics.
//!
//! Run: `cargo build -p crm-sync-cli --bins && cargo test -p crm-sync-e2e --test suites cli::`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli_backfill;
mod cli_polish;
mod cli_trail;

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use crm_sync_e2e::{TestEnv, binary_path, eventually, read_topic, topic_message_count};
use crm_sync_proto::Message;
use crm_sync_proto::v1::CrmEvent;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Runs `crm-sync ARGS` with the test's configuration; `extra_env` adds variables (e.g. secrets
/// a tenants file references).
async fn crm_sync(
    env: &TestEnv,
    args: &[&str],
    extra_env: &[(&str, &str)],
    stdin: Option<&str>,
) -> Output {
    let path = binary_path("crm-sync");
    let mut command = Command::new(&path);
    command
        .args(args)
        .envs(env.service_env())
        .envs(extra_env.iter().copied())
        .env_remove("CRM_SYNC_CONFIG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap_or_else(|e| {
        panic!(
            "starting {} (run `cargo build -p crm-sync-cli --bins` first): {e}",
            path.display()
        )
    });
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
        drop(pipe);
    }
    tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("crm-sync {args:?} did not finish within 90 s"))
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn write_file(env: &TestEnv, name: &str, contents: &str) -> PathBuf {
    let path = env.log_dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn produce_then_consume_round_trips_a_crm_event() {
    let env = TestEnv::new("cli-round-trip").await;
    let integration_id = uuid::Uuid::new_v4().to_string();
    let event = json!({
        "event_id": format!("evt-{}", uuid::Uuid::new_v4()),
        "integration_id": integration_id,
        "crm": "CRM_KIND_SALESFORCE",
        "object_type": "Opportunity",
        "record_id": "0065g00000XyZ12AAB",
        "change_type": "CHANGE_TYPE_UPDATED",
        "fields": {
            "StageName": {"text": "Closed Won"},
            "Amount": {"number": "1250.50"},
            "Description": {"null_value": true}
        },
        "owner": {"crm_user_id": "0055g00000AbCdEAAZ", "name": "Ada Lovelace", "email": "ada@example.com"},
        "occurred_at": "2026-11-20T15:04:05Z",
        "source_delivery_id": "04l5g00000ABCDEAA1",
        "crm_account_id": "00D5g000004ABCDEAA"
    });
    // The topic is given by its alias, resolved through CRM_SYNC__TOPICS__EVENTS like the services.
    let file = write_file(&env, "events.jsonl", &format!("{event}\n"));
    let out = crm_sync(
        &env,
        &[
            "produce",
            "--topic",
            "events",
            "--file",
            file.to_str().unwrap(),
        ],
        &[],
        None,
    )
    .await;
    assert_success("produce", &out);
    assert!(
        text(&out.stdout).contains(&format!("produced 1 messages to {}", env.topics.events)),
        "{}",
        text(&out.stdout)
    );

    // What landed in Kafka, read without the CLI: protobuf value, derived key, event-id header.
    let expected_key = format!("{integration_id}/Opportunity/0065g00000XyZ12AAB");
    let records = read_topic(&env.topics.events).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key.as_deref(), Some(expected_key.as_str()));
    assert_eq!(
        records[0].header("crm-sync-event-id"),
        event["event_id"].as_str()
    );
    let decoded = CrmEvent::decode(records[0].payload.as_slice()).unwrap();
    assert_eq!(decoded.owner.unwrap().email, "ada@example.com");
    assert_eq!(decoded.occurred_at.unwrap().seconds, 1_795_187_045);

    let out = crm_sync(
        &env,
        &[
            "consume",
            "--topic",
            &env.topics.events,
            "--from-beginning",
            "--max",
            "1",
            "--timeout",
            "30",
        ],
        &[],
        None,
    )
    .await;
    assert_success("consume", &out);
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let record: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(record["topic"], json!(env.topics.events));
    assert_eq!(record["key"], json!(expected_key));
    assert_eq!(record["offset"], json!(records[0].offset));
    assert_eq!(record["partition"], json!(records[0].partition));
    assert_eq!(record["headers"]["crm-sync-event-id"], event["event_id"]);
    // Every field of the input is non-default, so nothing is omitted on the way back.
    assert_eq!(record["value"], event);
}

#[tokio::test(flavor = "multi_thread")]
async fn produce_generates_a_missing_event_id_and_reads_stdin() {
    let env = TestEnv::new("cli-generated-id").await;
    let line = json!({"integration_id": "i-1", "object_type": "Lead", "record_id": "00Q1", "change_type": "CHANGE_TYPE_CREATED"});
    let out = crm_sync(
        &env,
        &["produce", "--topic", &env.topics.events],
        &[],
        Some(&format!("{line}\n")),
    )
    .await;
    assert_success("produce from stdin", &out);
    assert!(
        text(&out.stderr).contains("stdin line 1: no event_id given, generated"),
        "{}",
        text(&out.stderr)
    );
    let records = read_topic(&env.topics.events).await;
    assert_eq!(records.len(), 1);
    let decoded = CrmEvent::decode(records[0].payload.as_slice()).unwrap();
    assert!(
        uuid::Uuid::parse_str(&decoded.event_id).is_ok(),
        "{}",
        decoded.event_id
    );
    assert_eq!(
        records[0].header("crm-sync-event-id"),
        Some(decoded.event_id.as_str())
    );
    assert_eq!(records[0].key.as_deref(), Some("i-1/Lead/00Q1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn produce_with_an_invalid_line_names_it_and_produces_nothing() {
    let env = TestEnv::new("cli-bad-line").await;
    let good = json!({"event_id": "e-1", "integration_id": "i", "object_type": "Opportunity", "record_id": "006A"});
    let input = format!("{good}\n{{\"event_id\": \"e-2\", \"integration_id\": \n{good}\n");
    let file = write_file(&env, "bad.jsonl", &input);
    let out = crm_sync(
        &env,
        &[
            "produce",
            "--topic",
            &env.topics.events,
            "--file",
            file.to_str().unwrap(),
        ],
        &[],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{} line 2", file.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("not a valid crm_sync.v1.CrmEvent"),
        "{stderr}"
    );

    let unknown_field = format!("{good}\n{}\n", json!({"event_id": "e-3", "colour": "red"}));
    let out = crm_sync(
        &env,
        &["produce", "--topic", &env.topics.events],
        &[],
        Some(&unknown_field),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("stdin line 2") && stderr.contains("colour"),
        "{stderr}"
    );

    // A just-created topic's metadata takes a moment to show up in the broker's answers.
    let topic = env.topics.events.clone();
    eventually(
        "the test topic to be visible in metadata",
        Duration::from_secs(10),
        || {
            let topic = topic.clone();
            async move { topic_is_visible(&topic).then_some(()) }
        },
    )
    .await;
    assert_eq!(topic_message_count(&env.topics.events), 0);
}

fn topic_is_visible(topic: &str) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", crm_sync_e2e::brokers())
        .create()
        .unwrap();
    consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .is_ok_and(|m| {
            m.topics()
                .iter()
                .any(|t| t.error().is_none() && !t.partitions().is_empty())
        })
}

pub(crate) const TENANTS: &str = r#"
companies:
  - slug: acme
    name: Acme Inc
    integrations:
      - name: salesforce-prod
        crm: salesforce
        crm_account_id: 00D5g000004ABCDEAA
        auto_sync_users: true
        webhook_token: ${ACME_SF_TOKEN}
        workflows:
          - name: Won opportunities
            active: true
            object_type: Opportunity
            triggers: [created, updated]
            conditions: {all: [{field: StageName, op: eq, value: Closed Won}, {field: Amount, op: gte, value: 100}]}
            user_field: OwnerId
            value_field: Amount
            date_field: CloseDate
            activity_type: deal_won
          - name: Meetings
            object_type: Event
            triggers: [created]
            user_field: OwnerId
            activity_type: meeting
    teams:
      - name: Sales
      - name: Enterprise
"#;

/// Every row of the tenant tables, all columns (including `updated_at`), in a stable order.
async fn tenant_rows(env: &TestEnv) -> Vec<String> {
    let mut rows = Vec::new();
    for table in ["companies", "integrations", "workflows", "teams"] {
        let table_rows: Vec<(String,)> = sqlx::query_as(&format!(
            "SELECT to_jsonb(t)::text FROM {table} t ORDER BY id"
        ))
        .fetch_all(&env.pool)
        .await
        .unwrap();
        rows.extend(table_rows.into_iter().map(|(r,)| format!("{table}: {r}")));
    }
    rows
}

async fn count(env: &TestEnv, table: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&env.pool)
        .await
        .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn applying_a_file_twice_changes_nothing_the_second_time() {
    let env = TestEnv::new("cli-apply-twice").await;
    let file = write_file(&env, "tenants.yaml", TENANTS);
    let token = format!("tok-{}", uuid::Uuid::new_v4());
    let secrets = [("ACME_SF_TOKEN", token.as_str())];

    let first = crm_sync(
        &env,
        &["apply", "-f", file.to_str().unwrap()],
        &secrets,
        None,
    )
    .await;
    assert_success("first apply", &first);
    let stdout = text(&first.stdout);
    assert!(
        stdout.contains("6 created, 0 updated, 0 unchanged"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(&token) && !text(&first.stderr).contains(&token),
        "the token was printed"
    );
    let (company_id,): (uuid::Uuid,) =
        sqlx::query_as("SELECT id FROM companies WHERE slug = 'acme'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    let (integration_id,): (uuid::Uuid,) =
        sqlx::query_as("SELECT id FROM integrations WHERE company_id = $1")
            .bind(company_id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(
        stdout.contains(&format!(
            "/v1/integrations/{integration_id}/salesforce/outbound-messages"
        )),
        "{stdout}"
    );
    let integration = crm_sync_store::integrations::find(&env.pool, integration_id)
        .await
        .unwrap()
        .unwrap();
    assert!(integration.accepts_token(&token));
    assert!(integration.auto_sync_users);
    let counts = (
        count(&env, "companies").await,
        count(&env, "integrations").await,
        count(&env, "workflows").await,
        count(&env, "teams").await,
    );
    assert_eq!(counts, (1, 1, 2, 2));
    let (active, inactive): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE active), count(*) FILTER (WHERE NOT active) FROM workflows",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        (active, inactive),
        (1, 1),
        "a workflow without `active:` stays inactive"
    );
    let before = tenant_rows(&env).await;

    let second = crm_sync(
        &env,
        &["apply", "-f", file.to_str().unwrap()],
        &secrets,
        None,
    )
    .await;
    assert_success("second apply", &second);
    assert!(
        text(&second.stdout).contains("0 created, 0 updated, 6 unchanged"),
        "{}",
        text(&second.stdout)
    );
    assert_eq!(
        tenant_rows(&env).await,
        before,
        "the second apply changed rows"
    );

    // A real change is applied in place: same ids, one row updated.
    let changed = write_file(
        &env,
        "tenants-2.yaml",
        &TENANTS.replace("auto_sync_users: true", "auto_sync_users: false"),
    );
    let third = crm_sync(
        &env,
        &["apply", "-f", changed.to_str().unwrap()],
        &secrets,
        None,
    )
    .await;
    assert_success("third apply", &third);
    assert!(
        text(&third.stdout).contains("0 created, 1 updated, 5 unchanged"),
        "{}",
        text(&third.stdout)
    );
    let integration = crm_sync_store::integrations::find(&env.pool, integration_id)
        .await
        .unwrap()
        .unwrap();
    assert!(!integration.auto_sync_users);
    assert_eq!(count(&env, "integrations").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_refuses_an_invalid_file_naming_file_and_line() {
    let env = TestEnv::new("cli-apply-invalid").await;
    let secrets = [("ACME_SF_TOKEN", "t")];

    // `op: eq` first appears on line 16 (the file starts with a newline).
    let bad_op = write_file(
        &env,
        "bad-op.yaml",
        &TENANTS.replacen("op: eq", "op: like", 1),
    );
    let out = crm_sync(
        &env,
        &["apply", "-f", bad_op.to_str().unwrap()],
        &secrets,
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "stdout: {}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:16:", bad_op.display())),
        "{stderr}"
    );
    assert!(stderr.contains("workflows[0].conditions"), "{stderr}");
    assert!(stderr.contains("unknown operator `like`"), "{stderr}");

    let bad_key = write_file(
        &env,
        "bad-key.yaml",
        &TENANTS.replace(
            "      - name: Enterprise",
            "      - name: Enterprise\n        colour: blue",
        ),
    );
    let out = crm_sync(
        &env,
        &["apply", "-f", bad_key.to_str().unwrap()],
        &secrets,
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:29:", bad_key.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("teams[1]: unknown field `colour`"),
        "{stderr}"
    );

    let good = write_file(&env, "good.yaml", TENANTS);
    let out = crm_sync(&env, &["apply", "-f", good.to_str().unwrap()], &[], None).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:10:", good.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("environment variable `ACME_SF_TOKEN` is not set"),
        "{stderr}"
    );

    // Validation happens before anything is written.
    assert_eq!(count(&env, "companies").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_records_what_it_changes_in_the_audit_log_as_cli() {
    let env = TestEnv::new("cli-apply-audit").await;
    let token = format!("tok-{}", uuid::Uuid::new_v4());
    let secrets = [("ACME_SF_TOKEN", token.as_str())];
    let apply = |contents: &str| {
        let file = write_file(&env, "tenants.yaml", contents);
        let env = &env;
        async move {
            let out = crm_sync(
                env,
                &["apply", "-f", file.to_str().unwrap()],
                &secrets,
                None,
            )
            .await;
            assert_success("apply", &out);
        }
    };
    let audited = || async {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT actor, action, details::text FROM audit_log ORDER BY id")
                .fetch_all(&env.pool)
                .await
                .unwrap();
        rows
    };

    apply(TENANTS).await;
    let rows = audited().await;
    assert!(rows.iter().all(|(actor, _, _)| actor == "cli"), "{rows:?}");
    let mut actions: Vec<&str> = rows.iter().map(|(_, action, _)| action.as_str()).collect();
    actions.sort();
    assert_eq!(
        actions,
        [
            "company.created",
            "integration.created",
            "team.created",
            "team.created",
            "workflow.created",
            "workflow.created"
        ]
    );
    assert!(
        rows.iter().all(|(_, _, details)| !details.contains(&token)),
        "a secret reached the audit log"
    );

    // Unchanged objects are not recorded; a changed one is.
    apply(TENANTS).await;
    assert_eq!(audited().await.len(), 6);
    apply(&TENANTS.replace(
        "activity_type: meeting",
        "activity_type: meeting\n            active: true",
    ))
    .await;
    let rows = audited().await;
    assert_eq!(rows.len(), 7, "{rows:?}");
    let (actor, action, details) = rows.last().unwrap();
    assert_eq!(
        (actor.as_str(), action.as_str()),
        ("cli", "workflow.updated")
    );
    assert!(details.contains("\"active\": true"), "{details}");
}
