//! Hostile input on the real stack: values PostgreSQL refuses never hold up a partition (the
//! provisioner dead-letters them with the reason and applies what follows), and ingest refuses
//! them, and anything that would not fit, with a 4xx naming the field or the limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::admin_support;

use std::time::Duration;

use crm_sync_e2e::salesforce::{Notification, outbound_message, won_opportunity};
use crm_sync_e2e::{Tenant, TestEnv, events, eventually, post_outbound_message, read_topic};
use crm_sync_proto::Message as _;
use crm_sync_proto::v1::{CrmUser, WorkflowOutcome};
use crm_sync_store::views;

const WAIT: Duration = Duration::from_secs(60);

/// Text that does not compress: PostgreSQL compresses long index entries, so a repeated
/// character would fit in an index where a real long id does not.
fn incompressible(len: usize) -> String {
    let mut text = String::with_capacity(len + 32);
    while text.len() < len {
        text.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    text.truncate(len);
    text
}

#[tokio::test]
async fn values_the_database_refuses_are_dead_lettered_and_the_partition_moves_on() {
    let env = TestEnv::new("refused").await;
    let tenant = Tenant::create(&env.pool, "refused", true, true).await;
    let outcome = |id: &str, record_id: String, owner: String, date_seconds: i64| {
        let owner = CrmUser {
            crm_user_id: owner,
            ..CrmUser::default()
        };
        WorkflowOutcome {
            outcome_id: id.into(),
            event_id: format!("event-{id}"),
            activity_date: Some(crm_sync_proto::Timestamp {
                seconds: date_seconds,
                nanos: 0,
            }),
            ..events::matched_outcome(&tenant, &record_id, owner)
        }
    };
    let ok_date = 1_795_000_000;
    // -5000-01-01T00:00:00.000+0000 (proleptic Gregorian, as chrono reads it): a valid
    // protobuf timestamp, out of PostgreSQL's timestamptz range.
    let year_minus_5000 = -219_952_022_400;
    let poison = [
        (
            "bad-date",
            outcome(
                "bad-date",
                "006REFUSED1".into(),
                "005A".into(),
                year_minus_5000,
            ),
        ),
        (
            "nul-owner",
            outcome("nul-owner", "006REFUSED2".into(), "005\0A".into(), ok_date),
        ),
        (
            "long-owner",
            outcome(
                "long-owner",
                "006REFUSED3".into(),
                incompressible(5000),
                ok_date,
            ),
        ),
        (
            "long-record",
            outcome("long-record", incompressible(5000), "005A".into(), ok_date),
        ),
    ];
    let good = outcome("good", "006REFUSEDOK".into(), "005A".into(), ok_date);

    // One key, so one partition, with the poison ahead of the good outcome.
    let key = format!("{}/Opportunity/refused", tenant.integration_id);
    let records: Vec<(Option<i32>, String, Vec<u8>)> = poison
        .iter()
        .map(|(_, o)| o)
        .chain([&good])
        .map(|o| (None, key.clone(), o.encode_to_vec()))
        .collect();
    events::backlog_on_matches(&env, &records).await;

    let _provisioner = env.start_service("provisioner", "provisioner", &[]).await;
    let activities = eventually(
        "the outcome behind the poison to be applied",
        WAIT,
        || async {
            let all = views::activities(&env.pool, tenant.company_id)
                .await
                .unwrap();
            (!all.is_empty()).then_some(all)
        },
    )
    .await;
    assert_eq!(activities.len(), 1, "only the good outcome: {activities:?}");
    assert_eq!(activities[0].record_id, "006REFUSEDOK");

    let dead = eventually(
        "every refused outcome to be dead-lettered",
        WAIT,
        || async {
            let dead = read_topic(&format!("{}.dlq", env.topics.matches)).await;
            (dead.len() >= poison.len()).then_some(dead)
        },
    )
    .await;
    assert_eq!(dead.len(), poison.len(), "exactly the refused outcomes");
    for record in &dead {
        assert_eq!(
            record.header("crm-sync-dlq-reason"),
            Some("database_refused"),
            "{:?}",
            record.headers
        );
        let detail = record.header("crm-sync-dlq-detail").unwrap_or_default();
        assert!(detail.starts_with("SQLSTATE "), "{detail}");
        assert_eq!(record.partition, dead[0].partition);
    }
    let ids: Vec<String> = dead
        .iter()
        .map(|r| {
            WorkflowOutcome::decode(r.payload.as_slice())
                .unwrap()
                .outcome_id
        })
        .collect();
    assert_eq!(
        ids,
        poison
            .iter()
            .map(|(id, _)| id.to_string())
            .collect::<Vec<_>>()
    );
    let details: Vec<&str> = dead
        .iter()
        .map(|r| r.header("crm-sync-dlq-detail").unwrap())
        .collect();
    assert!(details[0].contains("out of range"), "{}", details[0]);
    assert!(details[1].contains("0x00"), "{}", details[1]);
}

/// Posts one Outbound Message with a single won opportunity whose fields are `fields` on top of
/// the usual ones.
async fn post_opportunity(
    ingest: &crm_sync_e2e::Service,
    tenant: &Tenant,
    record_id: &str,
    owner: &str,
    extra: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut n: Notification<'_> = won_opportunity("04lREFUSED0000001A", record_id, owner, "10");
    for &(name, value) in extra {
        n.fields.retain(|(k, _)| *k != name);
        n.fields.push((name, value));
    }
    let (status, body) = post_outbound_message(
        ingest,
        tenant,
        outbound_message(&tenant.organization_id, &[n]),
    )
    .await;
    (status, serde_json::from_str(&body).unwrap_or_default())
}

#[tokio::test]
async fn ingest_refuses_values_that_cannot_be_stored_naming_the_field() {
    let env = TestEnv::new("refuse400").await;
    let tenant = Tenant::create(&env.pool, "refuse400", true, true).await;
    let ingest = env
        .start_service(
            "ingest",
            "ingest",
            &[("CRM_SYNC__INGEST__MAX_BODY_BYTES", "4194304")],
        )
        .await;

    let long_id = "0".repeat(4000);
    let big = "x".repeat(1_500_000);
    // (record id, owner id, extra fields, status, error, field named)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        u16,
        &'a str,
        &'a str,
    );
    let cases: [Case<'_>; 6] = [
        (
            "006OK0000000001AAA",
            "005A",
            &[("CloseDate", "-5000-01-01T00:00:00.000+0000")],
            400,
            "invalid_value",
            "fields.CloseDate",
        ),
        (
            "006OK0000000001AAA",
            "005&#0;A",
            &[],
            400,
            "malformed_message",
            "",
        ),
        (
            "006OK0000000001AAA",
            &long_id[..300],
            &[],
            400,
            "invalid_value",
            "owner.crm_user_id",
        ),
        (&long_id, "005A", &[], 400, "invalid_value", "record_id"),
        ("006/a", "005A", &[], 400, "invalid_value", "record_id"),
        (
            "006OK0000000001AAA",
            "005A",
            &[("Description", &big)],
            400,
            "invalid_value",
            "fields.Description",
        ),
    ];
    for (record_id, owner, extra, status, code, field) in cases {
        let (got, body) = post_opportunity(&ingest, &tenant, record_id, owner, extra).await;
        assert_eq!(got, status, "{body}");
        assert_eq!(body["error"], code, "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{message}");
        // Which of the request's records to fix, unless its id is what is wrong.
        if code == "invalid_value" && field != "record_id" {
            let record = format!("record Opportunity/{record_id}: {field}");
            assert!(message.starts_with(&record), "{message}");
        }
    }
    // A control character (written as XML allows it) in the owner id.
    let (got, body) =
        post_opportunity(&ingest, &tenant, "006OK0000000001AAA", "005&#9;A", &[]).await;
    assert_eq!(got, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("owner.crm_user_id"),
        "{body}"
    );
    assert_eq!(
        crm_sync_e2e::topic_message_count(&env.topics.events),
        0,
        "nothing was published"
    );
    let (got, body) = post_opportunity(&ingest, &tenant, "006OK0000000001AAA", "005A", &[]).await;
    assert_eq!(got, 200, "{body}");
}

#[tokio::test]
async fn admin_api_answers_bad_input_with_4xx_not_500() {
    use admin_support::{company_path, start_admin_api, token};
    use crm_sync_e2e::app::AdminClient;

    let env = TestEnv::new("admin-bad").await;
    let tenant = Tenant::create(&env.pool, "admin-bad", true, true).await;
    let admin = token(&env, tenant.company_id, "admin").await;
    let api = start_admin_api(&env).await;
    let c = AdminClient::new(&api, Some(&admin));
    let p = |rest: &str| company_path(tenant.company_id, rest);

    c.post(&p("/teams"), serde_json::json!({"name": "Nor\u{0}dics"}))
        .await
        .invalid("name");
    let created = c
        .post(&p("/teams"), serde_json::json!({"name": "Nordics"}))
        .await
        .expect(201);
    c.patch(
        &p(&format!("/teams/{}", created["id"].as_str().unwrap())),
        serde_json::json!({"name": "a\u{1}b"}),
    )
    .await
    .invalid("name");

    // Cursors this service never writes: positions outside what the database can hold.
    let crafted = [
        "k:-219952022400000000:00000000-0000-0000-0000-000000000000",
        "k:253402300800000000:00000000-0000-0000-0000-000000000000",
        "o:9223372036854775807",
        "b:-1",
    ];
    for list in [
        "/activities",
        "/users",
        "/teams",
        "/integrations",
        "/workflows",
        "/audit-log",
        "/crm-identities",
        "/leaderboard?activity_type=x",
    ] {
        let sep = if list.contains('?') { '&' } else { '?' };
        for cursor in crafted {
            let answer = c
                .get(&p(&format!("{list}{sep}cursor={}", hex(cursor))))
                .await;
            assert_eq!(answer.status, 422, "{list} with {cursor}: {}", answer.body);
            answer.invalid("cursor");
        }
    }
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Outbound Messages built to be slow (the duplicate-attribute check was quadratic; deep nesting
/// overflowed the XML reader), each just under the 4 MiB body limit: refused quickly. The bound
/// is generous for a debug build on a shared machine; BENCHMARKS.md has the measured figures.
#[tokio::test]
async fn hostile_xml_within_the_size_limit_is_refused_quickly() {
    const SIZE: usize = 4 * 1024 * 1024 - 1024;
    let env = TestEnv::new("hostile-xml").await;
    let tenant = Tenant::create(&env.pool, "hostile-xml", true, true).await;
    let ingest = env.start_service("ingest", "ingest", &[]).await;
    let envelope = |inner: &str| {
        format!(
            "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body>{inner}</soapenv:Body></soapenv:Envelope>"
        )
    };
    let mut wide = String::from("<x");
    let mut i = 0;
    while wide.len() < SIZE - 200 {
        wide.push_str(&format!(" a{i}=\"\""));
        i += 1;
    }
    wide.push_str("/>");
    let deep = format!("{}{}", "<a>".repeat(SIZE / 8), "</a>".repeat(SIZE / 8));
    let one = format!(
        "<x {}/>",
        (0..32)
            .map(|i| format!("a{i}=\"\""))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let many = one.repeat((SIZE - 200) / one.len());
    for (what, inner) in [
        ("attributes on one element", wide),
        ("deep nesting", deep),
        ("32 attributes on every element", many),
    ] {
        let body = envelope(&inner);
        assert!(body.len() <= 4 * 1024 * 1024);
        let started = std::time::Instant::now();
        let (status, answer) = post_outbound_message(&ingest, &tenant, body.clone()).await;
        let took = started.elapsed();
        eprintln!("{what}: {} bytes, HTTP {status} in {took:?}", body.len());
        assert!((400..500).contains(&status), "{what}: {status} {answer}");
        assert!(took < Duration::from_secs(5), "{what} took {took:?}");
    }
}
