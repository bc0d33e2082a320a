use std::collections::BTreeSet;

use chrono::Utc;
use crm_sync_crm_directory::Crm;
use crm_sync_e2e::fake_crm::Kind;
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
    let requests = fake.requests_to("/api/data/v9.2/opportunities");
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
