use std::collections::BTreeSet;
use std::time::Duration;

use crm_sync_crm_directory::{Credentials, Crm, LookupError};
use crm_sync_crm_pull::{PullClient, PullError};
use crm_sync_e2e::fake_crm::Kind;
use crm_sync_proto::v1::{ChangeType, field_value};
use serde_json::json;
use uuid::Uuid;

use super::*;

const FIELDS: &[&str] = &["StageName", "Amount", "CloseDate"];

fn id(n: usize) -> String {
    format!("006{n:015}")
}

#[tokio::test]
async fn query_all_pages_through_locators_with_deletes_and_stable_ids() {
    let fake = start(Kind::Salesforce).await;
    let old = at("2026-01-05T10:00:00Z");
    fake.put_at(
        "Opportunity",
        &id(0),
        json!({"StageName": "Prospecting"}),
        old,
    );
    for n in 1..=450 {
        fake.put(
            "Opportunity",
            &id(n),
            json!({"StageName": "Closed Won", "Amount": 1250.5, "CloseDate": "2026-11-20", "OwnerId": "0055g00000AbCdEAAZ"}),
        );
    }
    fake.delete("Opportunity", &id(7));
    let client = client(&fake, Crm::Salesforce, TOKEN, config(200));
    let since = at("2026-06-01T00:00:00Z");
    let events = pull_all(&client, &scope("Opportunity", FIELDS), since)
        .await
        .unwrap();

    let ids: BTreeSet<&str> = events.iter().map(|e| e.record_id.as_str()).collect();
    assert_eq!(ids.len(), 450, "every record changed since the date, once");
    assert!(
        !ids.contains(id(0).as_str()),
        "older records are not pulled"
    );
    let deleted: Vec<_> = events
        .iter()
        .filter(|e| e.change_type == ChangeType::Deleted as i32)
        .collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].record_id, id(7));
    let e = events.iter().find(|e| e.record_id == id(3)).unwrap();
    assert!(e.full_snapshot);
    assert_eq!(e.object_type, "Opportunity");
    assert_eq!(text(e, "StageName").as_deref(), Some("Closed Won"));
    assert_eq!(
        kind_of(&e.fields["Amount"]),
        &field_value::Kind::Number("1250.5".into())
    );
    assert_eq!(e.owner.as_ref().unwrap().crm_user_id, "0055g00000AbCdEAAZ");
    let record = fake.shared.records.lock().unwrap()[&("Opportunity".to_owned(), id(3))].clone();
    assert_eq!(
        occurred(e),
        record.modified,
        "occurred_at is the CRM's SystemModstamp"
    );
    // Ordered by SystemModstamp: the locator pages arrive in order.
    let stamps: Vec<_> = events.iter().map(occurred).collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]));
    // One queryAll and two locator pages of at most 200.
    assert_eq!(fake.requests_to("/queryAll").len(), 1);
    assert_eq!(fake.requests_to("/query/").len(), 2);
    let soql = &fake.requests_to("/queryAll")[0].query["q"];
    assert!(
        soql.contains("SystemModstamp >= 2026-06-01T00:00:00.000Z"),
        "{soql}"
    );

    // A second pull of unchanged records carries the same event ids (deduplicated downstream).
    let again = pull_all(&client, &scope("Opportunity", FIELDS), since)
        .await
        .unwrap();
    let first: BTreeSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let second: BTreeSet<&str> = again.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(first, second);
    // A change gives a new id.
    fake.put("Opportunity", &id(3), json!({"Amount": 99}));
    let third = pull_all(&client, &scope("Opportunity", FIELDS), since)
        .await
        .unwrap();
    let changed = third.iter().find(|e| e.record_id == id(3)).unwrap();
    assert!(!first.contains(changed.event_id.as_str()));
}

#[tokio::test]
async fn retry_after_of_a_429_is_waited_for() {
    let fake = start(Kind::Salesforce).await;
    fake.put("Opportunity", &id(1), json!({"StageName": "Closed Won"}));
    fake.fail_next(
        429,
        Some(1),
        r#"[{"errorCode":"REQUEST_LIMIT_EXCEEDED","message":"slow down"}]"#,
    );
    let client = client(&fake, Crm::Salesforce, TOKEN, config(200));
    let events = pull_all(
        &client,
        &scope("Opportunity", FIELDS),
        at("2020-01-01T00:00:00Z"),
    )
    .await
    .unwrap();
    assert_eq!(events.len(), 1);
    let log = fake.requests();
    assert_eq!(log[0].status, 429);
    assert_eq!(log[1].status, 200);
    let waited = log[1].at.duration_since(log[0].at);
    assert!(
        waited >= Duration::from_millis(990),
        "waited only {waited:?}"
    );
}

#[tokio::test]
async fn pulls_stop_at_the_configured_share_of_the_daily_limit() {
    let fake = start(Kind::Salesforce).await;
    for n in 1..=5 {
        fake.put("Opportunity", &id(n), json!({"StageName": "Closed Won"}));
    }
    // The next request makes it 7,500 of 15,000: half, the configured share.
    fake.set_api_usage(7_499, 15_000);
    let mut cfg = config(2);
    cfg.salesforce_max_api_share = 0.5;
    let client = client(&fake, Crm::Salesforce, TOKEN, cfg);
    let error = pull_all(
        &client,
        &scope("Opportunity", FIELDS),
        at("2020-01-01T00:00:00Z"),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, PullError::ApiLimit(_)), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("7500 of its 15000") && message.contains("50 %"),
        "{message}"
    );
    assert_eq!(
        fake.requests().len(),
        1,
        "no request once the share is used"
    );
    assert_eq!(client.api_usage(), Some((7_500, 15_000)));
}

#[tokio::test]
async fn refused_or_missing_credentials_are_named() {
    let fake = start(Kind::Salesforce).await;
    let client = client(&fake, Crm::Salesforce, "wrong-token", config(200));
    let error = pull_all(
        &client,
        &scope("Opportunity", FIELDS),
        at("2020-01-01T00:00:00Z"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, PullError::Api(LookupError::Unauthorized(_))),
        "{error:?}"
    );
    assert!(error.to_string().contains("refused"), "{error}");
    assert!(!error.is_transient());

    let missing = PullClient::new(
        Uuid::new_v4(),
        Crm::Salesforce,
        Credentials {
            base_url: Some(fake.url.clone()),
            ..Credentials::default()
        },
        config(200),
    )
    .unwrap_err();
    assert!(
        missing.to_string().contains("credentials are incomplete"),
        "{missing}"
    );
}

#[tokio::test]
async fn garbage_is_an_error_not_an_empty_page() {
    let fake = start(Kind::Salesforce).await;
    fake.put("Opportunity", &id(1), json!({}));
    fake.fail_next(200, None, "<html>maintenance</html>");
    let client = client(&fake, Crm::Salesforce, TOKEN, config(200));
    let error = pull_all(
        &client,
        &scope("Opportunity", FIELDS),
        at("2020-01-01T00:00:00Z"),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, PullError::Garbage { .. }), "{error:?}");
    // Field names never reach SOQL unchecked.
    let bad = client
        .changes(
            &scope("Opportunity", &["Amount FROM User --"]),
            &Cursor::start(Utc::now()),
        )
        .await
        .unwrap_err();
    assert!(matches!(bad, PullError::Invalid(_)), "{bad:?}");
}

#[tokio::test]
async fn one_record_for_hydration() {
    let fake = start(Kind::Salesforce).await;
    fake.put(
        "Opportunity",
        &id(1),
        json!({"StageName": "Closed Won", "Amount": 10, "OwnerId": "0055g00000AbCdEAAZ"}),
    );
    fake.put("Opportunity", &id(2), json!({}));
    fake.delete("Opportunity", &id(2));
    let client = client(&fake, Crm::Salesforce, TOKEN, config(200));
    let s = scope("Opportunity", FIELDS);
    let e = client.record(&s, &id(1)).await.unwrap().unwrap();
    assert!(e.full_snapshot);
    assert_eq!(text(&e, "StageName").as_deref(), Some("Closed Won"));
    assert_eq!(
        e.fields["CloseDate"].kind,
        Some(field_value::Kind::NullValue(true))
    );
    assert_eq!(e.change_type, ChangeType::Created as i32);
    assert!(client.record(&s, &id(2)).await.unwrap().is_none());
    assert!(client.record(&s, "../User/x").await.is_err());
}

/// A pass whose query locator is gone once its first page is published (a backfill that waited
/// out a retry for more than 15 minutes finds it expired): every record still comes, each
/// record's event id the same as had the locator lived.
async fn pass_across_a_lost_locator(lose: impl Fn(&FakeCrm)) {
    let fake = start(Kind::Salesforce).await;
    for n in 1..=250 {
        fake.put("Opportunity", &id(n), json!({"StageName": "Closed Won"}));
    }
    let client = client(&fake, Crm::Salesforce, TOKEN, config(100));
    let scope = scope("Opportunity", FIELDS);
    let since = chrono::Utc::now() - chrono::Duration::days(1);
    let first = client.changes(&scope, &Cursor::start(since)).await.unwrap();
    lose(&fake);
    let (rest, _) = pass(&client, &scope, first.next.clone().unwrap())
        .await
        .unwrap();
    let mut by_record: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for e in first.events.iter().chain(&rest) {
        by_record
            .entry(e.record_id.clone())
            .or_default()
            .insert(e.event_id.clone());
    }
    assert_eq!(by_record.len(), 250, "no record lost");
    assert!(
        by_record.values().all(|ids| ids.len() == 1),
        "a record read again has the same event id"
    );
    let queries = fake.requests_to("/queryAll");
    assert_eq!(queries.len(), 2, "the query was run again once");
    let newest_published = first.events.iter().map(occurred).max().unwrap();
    assert!(
        queries[1].query["q"].contains(&format!(
            "SystemModstamp >= {}",
            newest_published.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )),
        "from the newest change published, not from the start: {}",
        queries[1].query["q"]
    );
}

#[tokio::test]
async fn an_expired_query_locator_restarts_the_query_from_the_newest_change_published() {
    pass_across_a_lost_locator(FakeCrm::expire_open_locators).await;
}

#[tokio::test]
async fn a_query_locator_answered_with_404_restarts_the_query_too() {
    pass_across_a_lost_locator(|fake| {
        fake.fail_next(
            404,
            None,
            r#"[{"errorCode":"NOT_FOUND","message":"The requested resource does not exist"}]"#,
        )
    })
    .await;
}

#[tokio::test]
async fn an_object_the_api_user_has_no_access_to_is_that_objects_error_not_the_credentials() {
    let fake = start(Kind::Salesforce).await;
    fake.put("Opportunity", &id(1), json!({"StageName": "Closed Won"}));
    fake.deny_object("Quote");
    let client = client(&fake, Crm::Salesforce, TOKEN, config(200));
    let error = pull_all(&client, &scope("Quote", &[]), at("2020-01-01T00:00:00Z"))
        .await
        .unwrap_err();
    assert!(matches!(error, PullError::Invalid(_)), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("Quote") && message.contains("INSUFFICIENT_ACCESS_OR_READONLY"),
        "{message}"
    );
    // The same credentials still read the objects the user may read.
    let events = pull_all(
        &client,
        &scope("Opportunity", &[]),
        at("2020-01-01T00:00:00Z"),
    )
    .await
    .unwrap();
    assert_eq!(events.len(), 1);
}
