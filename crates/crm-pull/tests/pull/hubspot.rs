use std::collections::BTreeSet;
use std::time::Duration;

use crm_sync_crm_directory::Crm;
use crm_sync_e2e::fake_crm::Kind;
use crm_sync_proto::v1::{ChangeType, field_value};
use serde_json::json;

use super::*;

const FIELDS: &[&str] = &["dealstage", "amount"];

#[tokio::test]
async fn search_beyond_the_10000_window_slices_by_time() {
    let fake = start(Kind::HubSpot).await;
    for n in 1..=10_250u32 {
        fake.put(
            "deal",
            &n.to_string(),
            json!({"dealstage": "closedwon", "amount": format!("{n}.5"), "hubspot_owner_id": "41629779"}),
        );
    }
    let client = client(&fake, Crm::HubSpot, TOKEN, config(200));
    let events = pull_all(&client, &scope("deal", FIELDS), at("2020-01-01T00:00:00Z"))
        .await
        .unwrap();
    let ids: BTreeSet<&str> = events.iter().map(|e| e.record_id.as_str()).collect();
    assert_eq!(ids.len(), 10_250, "every deal, past the search window");
    let searches = fake.requests_to("/search");
    assert!(
        searches.iter().all(|r| r.status == 200),
        "no search beyond the window"
    );
    let restarts = searches
        .iter()
        .filter(|r| !r.body.contains("\"after\""))
        .count();
    assert_eq!(restarts, 2, "one new search when the window was reached");
    let e = events.iter().find(|e| e.record_id == "42").unwrap();
    // As the webhook connector writes property values: text.
    assert_eq!(
        kind_of(&e.fields["amount"]),
        &field_value::Kind::Text("42.5".into())
    );
    assert_eq!(e.owner.as_ref().unwrap().crm_user_id, "41629779");
    assert!(e.full_snapshot);
}

#[tokio::test]
async fn archived_deals_become_deletes_and_empty_values_are_null() {
    let fake = start(Kind::HubSpot).await;
    fake.put("deal", "1", json!({"dealstage": "closedwon", "amount": ""}));
    fake.put("deal", "2", json!({"dealstage": "closedwon"}));
    fake.delete("deal", "2");
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let client = client(&fake, Crm::HubSpot, TOKEN, config(100));
    let events = pull_all(&client, &scope("deal", FIELDS), since)
        .await
        .unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    let live = events.iter().find(|e| e.record_id == "1").unwrap();
    assert_eq!(
        live.fields["amount"].kind,
        Some(field_value::Kind::NullValue(true))
    );
    let gone = events.iter().find(|e| e.record_id == "2").unwrap();
    assert_eq!(gone.change_type, ChangeType::Deleted as i32);
    let record = fake.shared.records.lock().unwrap()[&("deal".to_owned(), "2".to_owned())].clone();
    assert_eq!(occurred(gone), record.deleted.unwrap());
    assert_eq!(fake.requests_to("/crm/v3/objects/deals").len(), 2);
}

#[tokio::test]
async fn secondly_limit_429s_are_retried() {
    let fake = start(Kind::HubSpot).await;
    for n in 1..=30u32 {
        fake.put("deal", &n.to_string(), json!({"dealstage": "closedwon"}));
    }
    fake.set_per_second(Some(2));
    // HubSpot says nothing of when to come back: the backoff has to outlast a second.
    let mut cfg = config(5);
    cfg.api.initial_backoff = Duration::from_millis(300);
    cfg.api.attempts = 6;
    let client = client(&fake, Crm::HubSpot, TOKEN, cfg);
    let events = pull_all(&client, &scope("deal", FIELDS), at("2020-01-01T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(events.len(), 30);
    let log = fake.requests();
    assert!(log.iter().any(|r| r.status == 429), "the limit was hit");
    assert_eq!(log.last().unwrap().status, 200);
}

#[tokio::test]
async fn the_daily_limit_stops_at_once() {
    let fake = start(Kind::HubSpot).await;
    fake.fail_next(
        429,
        None,
        r#"{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","policyName":"DAILY"}"#,
    );
    let client = client(&fake, Crm::HubSpot, TOKEN, config(5));
    let error = pull_all(&client, &scope("deal", FIELDS), at("2020-01-01T00:00:00Z"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("daily API limit"), "{error}");
    assert_eq!(fake.requests().len(), 1, "not retried");
}

#[tokio::test]
async fn batch_read_for_hydration() {
    let fake = start(Kind::HubSpot).await;
    fake.put(
        "deal",
        "7",
        json!({"dealstage": "appointmentscheduled", "amount": "900"}),
    );
    fake.put("deal", "7", json!({"dealstage": "closedwon"}));
    let client = client(&fake, Crm::HubSpot, TOKEN, config(100));
    let e = client
        .record(&scope("deal", FIELDS), "7")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(&e, "amount").as_deref(), Some("900"));
    assert_eq!(text(&e, "dealstage").as_deref(), Some("closedwon"));
    assert_eq!(e.change_type, ChangeType::Updated as i32);
    assert!(
        client
            .record(&scope("deal", FIELDS), "8")
            .await
            .unwrap()
            .is_none()
    );
    let read = &fake.requests_to("/batch/read")[0];
    assert!(read.body.contains("\"amount\"") && read.body.contains("hubspot_owner_id"));
}

#[tokio::test]
async fn a_deal_archived_before_the_search_restarts_at_the_window_is_still_a_delete() {
    let fake = start(Kind::HubSpot).await;
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    // Archived early in the pass's span: older than every deal the first 10,000 results hold.
    fake.put("deal", "9999999", json!({"dealstage": "closedwon"}));
    fake.delete("deal", "9999999");
    for n in 1..=10_050u32 {
        fake.put("deal", &n.to_string(), json!({"dealstage": "closedwon"}));
    }
    let client = client(&fake, Crm::HubSpot, TOKEN, config(200));
    let events = pull_all(&client, &scope("deal", FIELDS), since)
        .await
        .unwrap();
    let restarts = fake
        .requests_to("/search")
        .iter()
        .filter(|r| !r.body.contains("\"after\""))
        .count();
    assert_eq!(restarts, 2, "the search restarted at the window");
    let deleted: Vec<&str> = events
        .iter()
        .filter(|e| e.change_type == ChangeType::Deleted as i32)
        .map(|e| e.record_id.as_str())
        .collect();
    assert_eq!(deleted, vec!["9999999"], "the archived deal is found");
}
