use std::collections::BTreeSet;

use chrono::Utc;
use crm_sync_crm_directory::Crm;
use crm_sync_e2e::fake_crm::{Kind, Logged};
use crm_sync_proto::v1::ChangeType;
use crm_sync_proto::v1::field_value;
use serde_json::json;

use super::*;

const OWNER: &str = "7d577253-3ef0-4a0a-bb7f-8335c2596e70";

fn guid(n: u32) -> String {
    format!("00000000-0000-0000-0000-{n:012}")
}

#[tokio::test]
async fn web_api_pages_by_next_link_with_webhook_names() {
    let fake = start(Kind::Dynamics).await;
    for n in 1..=25u32 {
        fake.put(
            "opportunity",
            &guid(n),
            json!({"name": format!("Opp {n}"), "estimatedvalue": 2500.5, "statecode": 1,
                   "statecode@OData.Community.Display.V1.FormattedValue": "Won",
                   "_ownerid_value": OWNER, "actualclosedate": "2026-11-20T00:00:00Z"}),
        );
    }
    let client = client(&fake, Crm::Dynamics, TOKEN, config(10));
    let events = pull_all(
        &client,
        &scope(
            "opportunity",
            &["name", "estimatedvalue", "statecode", "actualclosedate"],
        ),
        Utc::now() - chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    let ids: BTreeSet<&str> = events.iter().map(|e| e.record_id.as_str()).collect();
    assert_eq!(ids.len(), 25);
    let requests: Vec<_> = fake
        .requests_to("/api/data/v9.2/opportunities")
        .into_iter()
        .filter(|r| !tracking(r))
        .collect();
    assert_eq!(requests.len(), 3, "pages of 10 by @odata.nextLink");
    let first = &requests[0].query;
    assert!(first["$filter"].starts_with("modifiedon ge "), "{first:?}");
    assert!(first["$select"].contains("_ownerid_value"), "{first:?}");
    let e = &events[0];
    assert!(e.full_snapshot);
    assert_eq!(e.owner.as_ref().unwrap().crm_user_id, OWNER);
    assert_eq!(text(e, "ownerid").as_deref(), Some(OWNER));
    assert_eq!(
        kind_of(&e.fields["estimatedvalue"]),
        &field_value::Kind::Number("2500.5".into())
    );
    assert_eq!(
        text(e, "statecode@OData.Community.Display.V1.FormattedValue").as_deref(),
        Some("Won")
    );
    // Dates as the webhook connector writes them.
    assert_eq!(
        text(e, "actualclosedate").as_deref(),
        Some("2026-11-20T00:00:00.000Z")
    );
    assert!(!e.fields.contains_key("@odata.etag"));
}

#[tokio::test]
async fn one_row_for_hydration() {
    let fake = start(Kind::Dynamics).await;
    fake.put(
        "opportunity",
        &guid(1),
        json!({"name": "A", "_ownerid_value": OWNER}),
    );
    let client = client(&fake, Crm::Dynamics, TOKEN, config(10));
    let s = scope("opportunity", &["name", "ownerid"]);
    let e = client.record(&s, &guid(1)).await.unwrap().unwrap();
    assert_eq!(text(&e, "name").as_deref(), Some("A"));
    assert_eq!(e.owner.as_ref().unwrap().crm_user_id, OWNER);
    assert!(client.record(&s, &guid(2)).await.unwrap().is_none());
}

/// A change-tracking request: the ids of a table (to start), its next pages, or a delta link.
fn tracking(r: &Logged) -> bool {
    r.query.contains_key("$trackedat")
        || r.query.contains_key("$deltatoken")
        || r.query.get("$select").is_some_and(|s| s == "opportunityid")
}

#[tokio::test]
async fn deletes_come_from_change_tracking_from_the_second_pass_on() {
    let fake = start(Kind::Dynamics).await;
    for n in 1..=12u32 {
        fake.put("opportunity", &guid(n), json!({"name": format!("Opp {n}")}));
    }
    let client = client(&fake, Crm::Dynamics, TOKEN, config(5));
    let s = scope("opportunity", &["name"]);
    let since = Utc::now() - chrono::Duration::hours(1);

    // The first pass only establishes the delta link: no delete is made up from a table read.
    let (events, delta) = pass(&client, &s, Cursor::start(since)).await.unwrap();
    assert_eq!(events.len(), 12);
    assert!(
        events
            .iter()
            .all(|e| e.change_type() != ChangeType::Deleted)
    );
    let delta = delta.expect("a delta link at the end of the pass");
    assert!(delta.contains("$deltatoken="), "{delta}");

    fake.delete("opportunity", &guid(3));
    fake.put("opportunity", &guid(4), json!({"name": "Renamed"}));
    let kept = Cursor {
        delta: Some(delta.clone()),
        origin: None,
        ..Cursor::start(since)
    };
    let (events, next_delta) = pass(&client, &s, kept).await.unwrap();
    let deleted: Vec<_> = events
        .iter()
        .filter(|e| e.change_type() == ChangeType::Deleted)
        .collect();
    assert_eq!(deleted.len(), 1, "{events:?}");
    assert_eq!(deleted[0].record_id, guid(3));
    assert!(!deleted[0].full_snapshot, "a delete names only the id");
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.query.contains_key("$deltatoken"))
    );
    let next_delta = next_delta.expect("a new delta link");
    assert_ne!(next_delta, delta);

    // A third pass from the new link sees nothing deleted again.
    let kept = Cursor {
        delta: Some(next_delta),
        origin: None,
        ..Cursor::start(since)
    };
    let (events, _) = pass(&client, &s, kept).await.unwrap();
    assert!(
        events
            .iter()
            .all(|e| e.change_type() != ChangeType::Deleted)
    );
}

#[tokio::test]
async fn a_table_without_change_tracking_is_pulled_without_its_deletes() {
    let fake = start(Kind::Dynamics).await;
    fake.put("opportunity", &guid(1), json!({"name": "A"}));
    fake.untrack("opportunity");
    let client = client(&fake, Crm::Dynamics, TOKEN, config(5));
    let s = scope("opportunity", &["name"]);
    let (events, delta) = pass(
        &client,
        &s,
        Cursor::start(Utc::now() - chrono::Duration::hours(1)),
    )
    .await
    .unwrap();
    assert_eq!(events.len(), 1, "the changes are still pulled");
    assert_eq!(delta, None);
}

#[tokio::test]
async fn a_pass_that_keeps_no_position_reads_no_ids_for_change_tracking() {
    let fake = start(Kind::Dynamics).await;
    for n in 1..=7u32 {
        fake.put("opportunity", &guid(n), json!({"name": format!("Opp {n}")}));
    }
    let client = client(&fake, Crm::Dynamics, TOKEN, config(5));
    let backfill = Scope {
        establish_tracking: false,
        ..scope("opportunity", &["name"])
    };
    let since = Utc::now() - chrono::Duration::hours(1);
    let (events, delta) = pass(&client, &backfill, Cursor::start(since))
        .await
        .unwrap();
    assert_eq!(events.len(), 7);
    assert_eq!(delta, None);
    let tracked: Vec<_> = fake.requests().into_iter().filter(tracking).collect();
    assert!(
        tracked.is_empty(),
        "no change-tracking request: {tracked:?}"
    );
}

/// Rows of `opportunity` all modified in the one second `at`, to the millisecond apart.
fn put_in_one_second(fake: &FakeCrm, ids: std::ops::RangeInclusive<u32>, at: DateTime<Utc>) {
    for n in ids {
        let ms = chrono::Duration::milliseconds(i64::from(n));
        fake.put_at(
            "opportunity",
            &guid(n),
            json!({"name": format!("Opp {n}")}),
            at + ms,
        );
    }
}

#[tokio::test]
async fn rows_sharing_a_second_across_pages_are_all_read() {
    let fake = start(Kind::Dynamics).await;
    let second = at("2026-11-20T10:00:00Z");
    put_in_one_second(&fake, 1..=7, second);
    put_in_one_second(&fake, 8..=9, second + chrono::Duration::seconds(1));
    let client = client(&fake, Crm::Dynamics, TOKEN, config(3));
    let scope = Scope {
        establish_tracking: false,
        ..scope("opportunity", &["name"])
    };
    let events = pull_all(&client, &scope, second - chrono::Duration::hours(1))
        .await
        .unwrap();
    let ids: BTreeSet<&str> = events.iter().map(|e| e.record_id.as_str()).collect();
    assert_eq!(ids.len(), 9, "every row, whatever the page: {ids:?}");
}

#[tokio::test]
async fn a_pass_from_within_a_second_reads_every_row_of_that_second() {
    let fake = start(Kind::Dynamics).await;
    let second = at("2026-11-20T10:00:00Z");
    put_in_one_second(&fake, 1..=4, second);
    let client = client(&fake, Crm::Dynamics, TOKEN, config(2));
    let scope = Scope {
        establish_tracking: false,
        ..scope("opportunity", &["name"])
    };
    // As a pass goes on from the newest change it saw (the stamp's own fraction included).
    let from = second + chrono::Duration::milliseconds(500);
    let events = pull_all(&client, &scope, from).await.unwrap();
    let ids: BTreeSet<&str> = events.iter().map(|e| e.record_id.as_str()).collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
}
