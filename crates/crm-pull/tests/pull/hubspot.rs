use std::collections::BTreeSet;
use std::time::Duration;

use crm_sync_crm_directory::Crm;
use crm_sync_e2e::fake_crm::{FakeCrm, Kind};
use crm_sync_proto::v1::{ChangeType, field_value};
use serde_json::json;

use super::*;

const FIELDS: &[&str] = &["dealstage", "amount"];

#[tokio::test]
async fn more_changes_than_the_10000_search_window_are_all_read() {
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
    assert!(
        searches.iter().all(|r| !r.body.contains("\"after\"")),
        "each page a new search from the newest time read"
    );
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
    let ids: BTreeSet<&str> = events.iter().map(|e| e.record_id.as_str()).collect();
    assert_eq!(ids.len(), 30);
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
async fn a_deal_archived_before_the_search_moves_on_is_still_a_delete() {
    let fake = start(Kind::HubSpot).await;
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    // Archived early in the pass's span: older than every deal the first search page holds.
    fake.put("deal", "9999999", json!({"dealstage": "closedwon"}));
    fake.delete("deal", "9999999");
    for n in 1..=450u32 {
        fake.put("deal", &n.to_string(), json!({"dealstage": "closedwon"}));
    }
    let client = client(&fake, Crm::HubSpot, TOKEN, config(200));
    let events = pull_all(&client, &scope("deal", FIELDS), since)
        .await
        .unwrap();
    assert_eq!(
        fake.requests_to("/search").len(),
        3,
        "the search went on from later times"
    );
    let deleted: Vec<&str> = events
        .iter()
        .filter(|e| e.change_type == ChangeType::Deleted as i32)
        .map(|e| e.record_id.as_str())
        .collect();
    assert_eq!(deleted, vec!["9999999"], "the archived deal is found");
}

/// The ids a pass from `since` reads, with `between` run after its first page.
async fn pass_with_a_change_after_the_first_page(
    client: &PullClient,
    since: chrono::DateTime<chrono::Utc>,
    between: impl FnOnce(),
) -> Vec<String> {
    let scope = scope("deal", FIELDS);
    let first = client
        .changes(&scope, &crm_sync_crm_pull::Cursor::start(since))
        .await
        .unwrap();
    between();
    let mut ids: Vec<String> = first.events.iter().map(|e| e.record_id.clone()).collect();
    if let Some(next) = first.next {
        let (rest, _) = pass(client, &scope, next).await.unwrap();
        ids.extend(rest.into_iter().map(|e| e.record_id));
    }
    ids
}

#[tokio::test]
async fn a_deal_edited_mid_pass_does_not_push_the_next_one_out_of_the_search() {
    let fake = start(Kind::HubSpot).await;
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    for n in 1..=7u32 {
        let at = since + chrono::Duration::minutes(i64::from(n));
        won_at(&fake, &n.to_string(), at);
    }
    let client = client(&fake, Crm::HubSpot, TOKEN, config(3));
    // Deal 2, read on the first page, is edited: it moves to the end of the results and deal 4
    // takes the third place.
    let ids = pass_with_a_change_after_the_first_page(&client, since, || {
        fake.put("deal", "2", json!({"dealstage": "closedlost"}));
    })
    .await;
    let read: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(
        read,
        BTreeSet::from(["1", "2", "3", "4", "5", "6", "7"]),
        "every deal of the pass: {ids:?}"
    );
}

#[tokio::test]
async fn deals_sharing_a_millisecond_are_all_read_whatever_their_order() {
    let fake = start(Kind::HubSpot).await;
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let minute = |n: i64| since + chrono::Duration::minutes(n);
    won_at(&fake, "1", minute(1));
    for id in ["2", "3", "4"] {
        won_at(&fake, id, minute(2));
    }
    won_at(&fake, "5", minute(3));
    won_at(&fake, "9", minute(4));
    let client = client(&fake, Crm::HubSpot, TOKEN, config(2));
    // A write elsewhere in the account: the search orders the three deals of one millisecond
    // differently from then on.
    let ids = pass_with_a_change_after_the_first_page(&client, since, || {
        fake.put("deal", "9", json!({"dealstage": "closedlost"}));
    })
    .await;
    let read: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(
        read,
        BTreeSet::from(["1", "2", "3", "4", "5", "9"]),
        "every deal of the pass: {ids:?}"
    );
}

#[tokio::test]
async fn an_import_larger_than_a_page_in_one_millisecond_is_read_whole_while_the_account_changes() {
    let fake = start(Kind::HubSpot).await;
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let imported = since + chrono::Duration::minutes(1);
    for n in 1..=7u32 {
        won_at(&fake, &n.to_string(), imported);
    }
    let client = client(&fake, Crm::HubSpot, TOKEN, config(2));
    let scope = scope("deal", FIELDS);
    let mut cursor = Some(crm_sync_crm_pull::Cursor::start(since));
    let mut read = BTreeSet::new();
    let mut pages = 0;
    while let Some(at) = cursor.take() {
        let page = client.changes(&scope, &at).await.unwrap();
        read.extend(page.events.into_iter().map(|e| e.record_id));
        pages += 1;
        assert!(pages < 40, "the pass ends");
        // Deals edited elsewhere in the account meanwhile: the search orders the import's
        // deals anew after each write.
        if pages < 5 {
            fake.put(
                "deal",
                &(100 + pages).to_string(),
                json!({"dealstage": "closedlost"}),
            );
        }
        cursor = page.next;
    }
    for n in 1..=7 {
        assert!(
            read.contains(&n.to_string()),
            "deal {n} of the import: {read:?}"
        );
    }
}

#[tokio::test]
async fn an_offset_saved_by_an_earlier_version_reads_its_millisecond_again_by_id() {
    let fake = start(Kind::HubSpot).await;
    let imported = chrono::Utc::now() - chrono::Duration::hours(1);
    for n in [3u32, 1, 2] {
        won_at(&fake, &n.to_string(), imported);
    }
    let client = client(&fake, Crm::HubSpot, TOKEN, config(2));
    let saved = crm_sync_crm_pull::Cursor {
        token: Some("200".into()),
        ..crm_sync_crm_pull::Cursor::start(imported)
    };
    let page = client
        .changes(&scope("deal", FIELDS), &saved)
        .await
        .unwrap();
    let ids: Vec<&str> = page.events.iter().map(|e| e.record_id.as_str()).collect();
    assert_eq!(ids, ["1", "2"]);
    let next = page.next.unwrap();
    assert_eq!(next.token.as_deref(), Some("2"), "{next:?}");
}

/// A deal won at `at`.
fn won_at(fake: &FakeCrm, id: &str, at: chrono::DateTime<chrono::Utc>) {
    fake.put_at("deal", id, json!({"dealstage": "closedwon"}), at);
}
