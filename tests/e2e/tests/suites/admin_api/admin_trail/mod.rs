//! The record trail and the health figures it feeds (a module of the admin_api suite), on the
//! real pipeline (workflow-evaluator and provisioner as processes, real Kafka and PostgreSQL):
//! why a deal did not count in words, the fix through the admin API and the next event
//! counting, a dead-lettered outcome with its reason, who may read it, bad input, retention.

use std::time::Duration;

use crm_sync_e2e::app::{App, AppOptions, spawn_app};
use crm_sync_e2e::events::{send, won_deal};
use crm_sync_e2e::{Tenant, TestEnv, eventually};
use crm_sync_proto::Message as _;
use crm_sync_proto::v1::field_value::Kind;
use crm_sync_proto::v1::{ChangeType, CrmEvent, CrmUser, FieldValue, OutcomeKind, WorkflowOutcome};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use crm_sync_e2e::app::AdminClient;

use crate::admin_support::{ADMIN_API_ENV, company_path, start_admin_api, token};

const WAIT: Duration = Duration::from_secs(60);

/// An update of `record` at stage `stage` with `amount`, owned by CRM user 005TRAIL.
fn deal(tenant: &Tenant, record: &str, stage: &str, amount: &str, delivery: &str) -> CrmEvent {
    let owner = CrmUser {
        crm_user_id: "005TRAIL".into(),
        name: "Tara Trail".into(),
        email: "tara@trail.example".into(),
    };
    let mut event = won_deal(tenant, record, owner);
    for (name, value) in [("StageName", stage), ("Amount", amount)] {
        event.fields.insert(
            name.into(),
            FieldValue {
                kind: Some(Kind::Text(value.into())),
            },
        );
    }
    event.source_delivery_id = delivery.into();
    event.set_change_type(ChangeType::Updated);
    event
}

/// The record's trail once its newest event is judged `summary`.
async fn trail_until(c: &AdminClient, path: &str, what: &str, summary: &str) -> Value {
    eventually(what, WAIT, || async {
        let t = c.get(path).await.expect(200);
        (t["events"][0]["summary"] == summary).then_some(t)
    })
    .await
}

/// An outcome PostgreSQL refuses (an activity date out of its range), straight onto the
/// matches topic as the evaluator would write it.
async fn send_refused_outcome(env: &TestEnv, tenant: &Tenant, record: &str) {
    let outcome = WorkflowOutcome {
        outcome_id: uuid::Uuid::new_v4().to_string(),
        event_id: "trail-refused".into(),
        company_id: tenant.company_id.to_string(),
        integration_id: tenant.integration_id.to_string(),
        workflow_id: tenant.workflow_id.to_string(),
        kind: OutcomeKind::Matched as i32,
        object_type: "Opportunity".into(),
        record_id: record.into(),
        owner: Some(CrmUser {
            crm_user_id: "005TRAIL".into(),
            ..CrmUser::default()
        }),
        activity_type: "deal_won".into(),
        value: "10".into(),
        // -5000-01-01: a valid protobuf timestamp, out of PostgreSQL's timestamptz range.
        activity_date: Some(crm_sync_proto::Timestamp {
            seconds: -219_952_022_400,
            nanos: 0,
        }),
        occurred_at: Some(crm_sync_proto::Timestamp {
            seconds: 1_795_000_000,
            nanos: 0,
        }),
        crm: 0,
    };
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .create()
        .unwrap();
    let key = format!("{}/Opportunity/{record}", tenant.integration_id);
    producer
        .send(
            FutureRecord::to(&env.topics.matches)
                .key(&key)
                .payload(&outcome.encode_to_vec()),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

/// The pipeline (its evaluator expiring the trail every second) and admin-api.
async fn spawn_pipeline(env: &TestEnv) -> App<'_> {
    spawn_app(
        env,
        AppOptions {
            evaluator_env: &[("CRM_SYNC__TRAIL__EXPIRY_INTERVAL_SECS", "1")],
            admin_api_env: Some(ADMIN_API_ENV),
            ..AppOptions::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn why_a_deal_did_not_count_the_fix_and_the_next_event_counting() {
    let env = TestEnv::new("admin-trail").await;
    let tenant = Tenant::create(&env.pool, "trail", true, true).await;
    let other = Tenant::create(&env.pool, "trail-other", true, true).await;
    let app = spawn_pipeline(&env).await;
    let admin = app.admin(Some(&token(&env, tenant.company_id, "admin").await));
    let viewer = app.admin(Some(&token(&env, tenant.company_id, "viewer").await));
    let stranger = app.admin(Some(&token(&env, other.company_id, "admin").await));
    let record = "006TRAIL000001";
    let path = company_path(
        tenant.company_id,
        &format!(
            "/integrations/{}/records/{record}/trail",
            tenant.integration_id
        ),
    );

    // The CRM calls its won stage "Won"; the workflow wants "Closed Won": the deal does not
    // count, and the trail says why in words, to a viewer too.
    send(&env, &deal(&tenant, record, "Won", "1200", "04lTRAIL1")).await;
    let t = trail_until(&viewer, &path, "the first event in the trail", "no_match").await;
    let event = &t["events"][0];
    assert_eq!(event["change_type"], "updated", "{t}");
    assert_eq!(event["source"], "webhook", "{t}");
    assert_eq!(event["delivery_id"], "04lTRAIL1", "{t}");
    let decision = &event["decisions"][0];
    assert_eq!(decision["workflow"], "Won opportunities", "{t}");
    assert_eq!(decision["decision"], "not_counted", "{t}");
    assert_eq!(decision["reason"], "conditions", "{t}");
    assert_eq!(
        decision["explanation"],
        json!(["StageName is \"Won\"; the condition wants eq \"Closed Won\""]),
        "{t}"
    );
    assert_eq!(t["followed"], json!([]), "nothing followed: {t}");

    // The recent events list offers it among those that did not count.
    let recent = viewer
        .get(&company_path(
            tenant.company_id,
            &format!(
                "/integrations/{}/trail?summary=no_match",
                tenant.integration_id
            ),
        ))
        .await
        .expect(200);
    assert_eq!(recent["items"][0]["record_id"], record, "{recent}");

    // The admin fixes the workflow; the record's next event counts, and the trail shows it
    // counted and what followed: an activity for the account auto-sync created.
    admin
        .patch(
            &company_path(
                tenant.company_id,
                &format!("/workflows/{}", tenant.workflow_id),
            ),
            json!({"conditions": {"all": [{"field": "StageName", "op": "eq", "value": "Won"}]}}),
        )
        .await
        .expect(200);
    // The evaluator picks the change up within moments: until it has, each next event is
    // judged by the old workflow, so a new one is sent each round.
    let mut amount = 1300;
    let (env_ref, viewer_ref, path_ref, tenant_ref) = (&env, &viewer, &path, &tenant);
    let t = eventually("the next event to count", WAIT, move || {
        amount += 1;
        let next = deal(
            tenant_ref,
            record,
            "Won",
            &amount.to_string(),
            &format!("04lTRAIL{amount}"),
        );
        let (env, viewer, path) = (env_ref, viewer_ref, path_ref);
        async move {
            send(env, &next).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let t = viewer.get(path).await.expect(200);
            (t["events"][0]["summary"] == "matched" && !t["followed"][0].is_null()).then_some(t)
        }
    })
    .await;
    assert_eq!(t["events"][0]["decisions"][0]["decision"], "counted", "{t}");
    let followed = &t["followed"][0];
    assert_eq!(followed["state"], "recorded", "{t}");
    assert_eq!(followed["user_name"], "Tara Trail", "{t}");
    assert!(
        followed["summary"]
            .as_str()
            .unwrap()
            .starts_with("activity recorded for Tara Trail"),
        "{t}"
    );
    let last = t["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last["summary"], "no_match",
        "the first event is still there: {t}"
    );

    // Another company's admin cannot read it (404, as for an integration that does not
    // exist); bad input is refused with a JSON body naming the field.
    let foreign = path.replace(
        &tenant.company_id.to_string(),
        &other.company_id.to_string(),
    );
    assert_eq!(stranger.get(&foreign).await.status, 404);
    let a = stranger.get(&path).await;
    assert_eq!(a.status, 404, "{}", a.body);
    let long = company_path(
        tenant.company_id,
        &format!(
            "/integrations/{}/records/{}/trail",
            tenant.integration_id,
            "x".repeat(300)
        ),
    );
    admin.get(&long).await.invalid("record_id");
    let control = path.replace(record, "006%01TRAIL");
    admin.get(&control).await.invalid("record_id");
    let recent = company_path(
        tenant.company_id,
        &format!("/integrations/{}/trail", tenant.integration_id),
    );
    admin
        .get(&format!("{recent}?limit=0"))
        .await
        .invalid("limit");
    let a = admin.get(&format!("{recent}?summary=maybe")).await;
    assert!((400..500).contains(&a.status), "{}", a.body);
    assert!(a.json()["message"].is_string(), "{}", a.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_show_with_their_reason_health_counts_and_old_entries_expire() {
    let env = TestEnv::new("admin-trail-dead").await;
    let tenant = Tenant::create(&env.pool, "trail-dead", true, true).await;
    let app = spawn_pipeline(&env).await;
    let viewer = app.admin(Some(&token(&env, tenant.company_id, "viewer").await));
    let base = company_path(
        tenant.company_id,
        &format!("/integrations/{}", tenant.integration_id),
    );

    // One event that does not count, one that does, and an outcome the database refuses. The
    // first is in the trail before the second is sent, so that the two are written in
    // different pages (the expiry below ages the first one's page only).
    send(
        &env,
        &deal(&tenant, "006TRAILLOST", "Closed Lost", "10", "d2"),
    )
    .await;
    eventually("the lost deal in its trail", WAIT, || async {
        let t = viewer
            .get(&format!("{base}/records/006TRAILLOST/trail"))
            .await
            .expect(200);
        (!t["events"][0].is_null()).then_some(())
    })
    .await;
    send(
        &env,
        &deal(&tenant, "006TRAILWON", "Closed Won", "10", "d1"),
    )
    .await;
    send_refused_outcome(&env, &tenant, "006TRAILDEAD").await;

    let t = eventually("the dead letter in the record's trail", WAIT, || async {
        let t = viewer
            .get(&format!("{base}/records/006TRAILDEAD/trail"))
            .await
            .expect(200);
        (!t["dead_letters"][0].is_null()).then_some(t)
    })
    .await;
    let dead = &t["dead_letters"][0];
    assert_eq!(dead["reason"], "database_refused", "{t}");
    assert_eq!(dead["service"], "provisioner", "{t}");
    assert!(
        dead["detail"].as_str().unwrap().contains("out of range"),
        "{t}"
    );
    assert_eq!(dead["topic"], env.topics.matches.as_str(), "{t}");
    let listed = viewer
        .get(&format!("{base}/dead-letters"))
        .await
        .expect(200);
    assert_eq!(listed["items"][0]["record_id"], "006TRAILDEAD", "{listed}");

    // Health: two events in the last hour, half of them counted, the dead letter, and red
    // because of it.
    let h = eventually("both events in the health figures", WAIT, || async {
        let h = viewer.get(&format!("{base}/health")).await.expect(200);
        (h["events_last_hour"] == 2).then_some(h)
    })
    .await;
    assert_eq!(h["matched_share_last_hour"], 0.5, "{h}");
    assert_eq!(h["dead_letters_last_hour"], 1, "{h}");
    assert_eq!(h["dead_letters_last_day"], 1, "{h}");
    assert_eq!(h["directory_lookups_failing"], 0, "{h}");
    assert_eq!(h["state"], "red", "{h}");
    assert!(
        h["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("could not be processed")),
        "{h}"
    );

    // Entries older than the retention (14 days by default) are deleted by the evaluator;
    // younger ones stay.
    sqlx::query(
        "UPDATE trail_pages SET first_judged_at = now() - interval '15 days',
             last_judged_at = now() - interval '15 days'
         WHERE id IN (SELECT page_id FROM trail_page_records WHERE record_id = $1)",
    )
    .bind("006TRAILLOST")
    .execute(&env.pool)
    .await
    .unwrap();
    eventually("the old entry to expire", WAIT, || async {
        let t = viewer
            .get(&format!("{base}/records/006TRAILLOST/trail"))
            .await
            .expect(200);
        t["events"].as_array().unwrap().is_empty().then_some(())
    })
    .await;
    let kept = viewer
        .get(&format!("{base}/records/006TRAILWON/trail"))
        .await
        .expect(200);
    assert_eq!(kept["events"][0]["summary"], "matched", "{kept}");
}

/// Events judged one second apart, newest last: `count` of them, of records `rec-0`… .
async fn judged_events(env: &TestEnv, tenant: &Tenant, count: usize) {
    use crm_sync_store::trail::{NewEvent, insert_events};
    let start = chrono::Utc::now() - chrono::Duration::minutes(10);
    let events: Vec<NewEvent> = (0..count)
        .map(|i| NewEvent {
            integration_id: tenant.integration_id,
            company_id: tenant.company_id,
            event_id: format!("evt-{i:03}"),
            object_type: "Opportunity".into(),
            record_id: format!("rec-{i}"),
            change_type: "updated",
            source_change_type: String::new(),
            source: "webhook",
            crm: "salesforce",
            delivery_id: format!("d-{i}"),
            occurred_at: None,
            received_at: None,
            // Two events share each second: ties are ordered by event id.
            judged_at: start + chrono::Duration::seconds((i / 2) as i64),
            summary: "no_match",
            verdicts: Vec::new(),
            read_values: None,
        })
        .collect();
    insert_events(&env.pool, &events).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_trail_lists_page_by_cursor_newest_first_without_gaps_or_repeats() {
    use crm_sync_store::trail::{NewDeadLetter, record_dead_letters};
    let env = TestEnv::new("trail-paging").await;
    let tenant = Tenant::create(&env.pool, "trail-paging", true, true).await;
    judged_events(&env, &tenant, 5).await;
    // Written in one statement, as a pulled page's refusals are.
    let letters: Vec<NewDeadLetter> = (0..3)
        .map(|offset| NewDeadLetter {
            integration_id: tenant.integration_id,
            object_type: "Opportunity".into(),
            record_id: format!("dead-{offset}"),
            event_id: None,
            service: "provisioner".into(),
            topic: format!("{}.dlq", env.topics.matches),
            partition: 0,
            offset,
            reason: "unstorable_value".into(),
            detail: "SQLSTATE 22008".into(),
        })
        .collect();
    record_dead_letters(&env.pool, &letters).await.unwrap();
    let viewer = token(&env, tenant.company_id, "viewer").await;
    let api = start_admin_api(&env).await;
    let c = AdminClient::new(&api, Some(&viewer));
    let base = company_path(
        tenant.company_id,
        &format!("/integrations/{}", tenant.integration_id),
    );

    for (list, field, expected) in [
        (
            "trail",
            "record_id",
            vec!["rec-4", "rec-3", "rec-2", "rec-1", "rec-0"],
        ),
        (
            "dead-letters",
            "record_id",
            vec!["dead-2", "dead-1", "dead-0"],
        ),
    ] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10 {
            let query = match &cursor {
                Some(c) => format!("?limit=2&cursor={c}"),
                None => "?limit=2".to_owned(),
            };
            let page = c.get(&format!("{base}/{list}{query}")).await.expect(200);
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= 2, "{page}");
            seen.extend(items.iter().map(|i| i[field].as_str().unwrap().to_owned()));
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(seen, expected, "{list}");
    }
    // A cursor this list never wrote is refused as such.
    let crafted: String = "n:1764000000000000:not-a-number"
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    c.get(&format!("{base}/dead-letters?cursor={crafted}"))
        .await
        .invalid("cursor");
    c.get(&format!("{base}/trail?cursor=zz"))
        .await
        .invalid("cursor");
}

/// The record trail as stored in pages: entries of the layout before pages stay readable, a
/// record's entries are found across pages, an event written twice (a replay) is shown once, and
/// the expiry deletes the pages with their lookup rows.
#[tokio::test(flavor = "multi_thread")]
async fn entries_are_read_across_pages_and_old_rows_each_event_once() {
    use crm_sync_store::trail::{NewEvent, expire, insert_events, recent_events, record_events};
    let env = TestEnv::new("trail-pages").await;
    let tenant = Tenant::create(&env.pool, "trail-pages", true, true).await;
    let (company, integration) = (tenant.company_id, tenant.integration_id);
    let start = chrono::Utc::now() - chrono::Duration::minutes(30);
    sqlx::query(
        "INSERT INTO trail_events (integration_id, event_id, company_id, object_type, record_id,
             change_type, source_change_type, source, crm, delivery_id, judged_at, summary,
             decisions)
         VALUES ($1, 'old-1', $2, 'Opportunity', 'rec-A', 'updated', '', 'webhook',
             'salesforce', 'd-old', $3, 'no_match', '[]')",
    )
    .bind(integration)
    .bind(company)
    .bind(start)
    .execute(&env.pool)
    .await
    .unwrap();
    // 600 events (three pages), every third one of record rec-A; then the first ten again.
    let event = |i: usize| NewEvent {
        integration_id: integration,
        company_id: company,
        event_id: format!("evt-{i:04}"),
        object_type: "Opportunity".into(),
        record_id: if i.is_multiple_of(3) {
            "rec-A".into()
        } else {
            format!("rec-{i}")
        },
        change_type: "updated",
        source_change_type: String::new(),
        source: "webhook",
        crm: "salesforce",
        delivery_id: format!("d-{i}"),
        occurred_at: None,
        received_at: None,
        judged_at: start + chrono::Duration::seconds(i as i64 + 1),
        summary: if i.is_multiple_of(2) {
            "matched"
        } else {
            "no_match"
        },
        verdicts: Vec::new(),
        read_values: None,
    };
    let events: Vec<NewEvent> = (0..600).map(event).collect();
    assert_eq!(insert_events(&env.pool, &events).await.unwrap(), 600);
    let replayed: Vec<NewEvent> = (0..10).map(event).collect();
    insert_events(&env.pool, &replayed).await.unwrap();

    let rows = record_events(&env.pool, company, integration, "rec-A", 500)
        .await
        .unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids.len(), 201, "200 entries in pages and the old row");
    assert_eq!((ids[0], ids[200]), ("evt-0597", "old-1"));
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        201
    );

    // The integration's latest, page by page through the cursor: every event once, in order.
    let mut listed = Vec::new();
    loop {
        let before = listed
            .last()
            .map(|(at, id): &(chrono::DateTime<chrono::Utc>, String)| (*at, id.as_str()));
        let page = recent_events(&env.pool, company, integration, None, before, 50)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        listed.extend(page.into_iter().map(|r| (r.judged_at, r.event_id)));
    }
    assert_eq!(listed.len(), 601);
    assert!(listed.windows(2).all(|w| w[0] > w[1]), "newest first");
    let matched = recent_events(&env.pool, company, integration, Some("matched"), None, 500)
        .await
        .unwrap();
    assert_eq!(matched.len(), 300);

    expire(&env.pool, chrono::Utc::now()).await.unwrap();
    let left: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM trail_pages), (SELECT count(*) FROM trail_page_records),
             (SELECT count(*) FROM trail_events)",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(left, (0, 0, 0));
}
