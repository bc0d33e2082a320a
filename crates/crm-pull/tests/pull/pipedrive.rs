use std::collections::BTreeSet;

use chrono::{Timelike, Utc};
use crm_sync_crm_directory::Crm;
use crm_sync_e2e::fake_crm::Kind;
use crm_sync_ingest::pipedrive;
use crm_sync_proto::v1::ChangeType;
use serde_json::json;

use super::*;

#[tokio::test]
async fn v2_lists_page_by_cursor_and_list_deleted_deals() {
    let fake = start(Kind::Pipedrive).await;
    for n in 1..=120u32 {
        fake.put(
            "deal",
            &n.to_string(),
            json!({"title": format!("Deal {n}"), "value": 500, "status": "won", "owner_id": 17,
                   "custom_fields": {"9dc80c50d78a15643bfc4ca79d76156a73a1ca0e": {"value": 12, "currency": "EUR"}}}),
        );
    }
    fake.delete("deal", "5");
    let client = client(&fake, Crm::Pipedrive, TOKEN, config(50));
    let events = pull_all(
        &client,
        &scope("deal", &["status", "value"]),
        Utc::now() - chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    let ids: BTreeSet<&str> = events.iter().map(|e| e.record_id.as_str()).collect();
    assert_eq!(ids.len(), 120);
    let gone: Vec<_> = events
        .iter()
        .filter(|e| e.change_type == ChangeType::Deleted as i32)
        .collect();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].record_id, "5");
    let lists = fake.requests_to("/api/v2/deals");
    assert_eq!(
        lists.len(),
        4,
        "three pages of live deals, one of deleted ones"
    );
    assert!(
        lists
            .iter()
            .all(|r| r.query.contains_key("updated_since") && r.query["api_token"] == TOKEN)
    );
    assert_eq!(
        lists[3].query.get("status").map(String::as_str),
        Some("deleted")
    );
    let e = events.iter().find(|e| e.record_id == "9").unwrap();
    assert_eq!(e.owner.as_ref().unwrap().crm_user_id, "17");
    assert_eq!(
        text(e, "9dc80c50d78a15643bfc4ca79d76156a73a1ca0e").as_deref(),
        Some("12")
    );
}

#[tokio::test]
async fn a_deal_deleted_in_the_second_it_was_won_is_a_new_event() {
    let fake = start(Kind::Pipedrive).await;
    let since = Utc::now() - chrono::Duration::hours(1);
    let client = client(&fake, Crm::Pipedrive, TOKEN, config(50));
    let scope = scope("deal", &["status"]);
    // Pipedrive's update_time has whole seconds: both versions carry the same stamp.
    let second = Utc::now().with_nanosecond(0).unwrap() - chrono::Duration::seconds(5);
    fake.put_at(
        "deal",
        "7",
        json!({"status": "won", "owner_id": 17}),
        second + chrono::Duration::milliseconds(100),
    );
    let won = pull_all(&client, &scope, since).await.unwrap();
    fake.delete_at("deal", "7", second + chrono::Duration::milliseconds(600));
    let after = pull_all(&client, &scope, since).await.unwrap();
    assert_eq!((won.len(), after.len()), (1, 1));
    let (won, deleted) = (&won[0], &after[0]);
    assert_eq!(deleted.change_type, ChangeType::Deleted as i32);
    assert_eq!(won.occurred_at, deleted.occurred_at, "the same stamp");
    assert_ne!(
        won.event_id, deleted.event_id,
        "the deletion is not a redelivery of the win"
    );
}

#[tokio::test]
async fn pulled_fields_read_like_the_webhook_connectors() {
    let fake = start(Kind::Pipedrive).await;
    let data = json!({"title": "Big deal", "value": 1500.25, "status": "won", "owner_id": 17,
        "stage_id": 3, "custom_fields": {"abc": {"value": 5, "currency": "USD"}, "def": "x"}});
    fake.put("deal", "77", data.clone());
    let client = client(&fake, Crm::Pipedrive, TOKEN, config(50));
    let pulled = client
        .record(&scope("deal", &[]), "77")
        .await
        .unwrap()
        .unwrap();
    // The webhook of the same record.
    let body = json!({"meta": {"action": "change", "entity": "deal", "entity_id": "77", "id": "d-1",
        "timestamp": "2026-11-20T10:00:00Z", "version": "2.0"}, "data": pulled_data(&fake), "previous": {}});
    let hook = pipedrive::parse(body.to_string().as_bytes()).unwrap();
    let webhook = pipedrive::to_event(client.integration_id(), &hook, Utc::now());
    assert_eq!(pulled.fields, webhook.fields);
    assert_eq!(pulled.owner, webhook.owner);
    assert!(
        client
            .record(&scope("deal", &[]), "78")
            .await
            .unwrap()
            .is_none()
    );
}

fn pulled_data(fake: &crm_sync_e2e::fake_crm::FakeCrm) -> serde_json::Value {
    let records = fake.shared.records.lock().unwrap();
    let r = &records[&("deal".to_owned(), "77".to_owned())];
    let mut data = json!({"id": 77, "add_time": r.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "update_time": r.modified.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "is_deleted": false});
    for (k, v) in &r.fields {
        data[k] = v.clone();
    }
    data
}
