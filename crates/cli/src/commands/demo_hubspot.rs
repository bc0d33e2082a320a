//! The HubSpot part of `crm-sync demo`: webhook batches as HubSpot sends them (a deal created,
//! its owner, amount and stage changing, each its own event), signed with
//! `X-HubSpot-Signature-v3` by the demo integration's client secret, for 2 owners' won deals and
//! one deal still open.
//!
//! The client secret is generated on the first run (random, never printed) and kept sealed with
//! the local `secrets.encryption_key` in the integration's credentials, where ingest reads it to
//! verify the signatures; later runs reuse it. Without an encryption key the HubSpot part is
//! skipped with a note.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use crm_sync_store::credentials::{self, IntegrationSecrets, SecretKey};
use crm_sync_store::views::{self, ActivityView};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::context::Context;

/// The HubSpot users owning the demo's deals (HubSpot owner ids are numbers).
pub const OWNERS: [&str; 2] = ["7100001", "7100002"];
const OPEN_OWNER: &str = "7100003";

/// One HubSpot deal of the demo: (object id, owner, stage, amount).
#[derive(Debug, Clone)]
pub struct Deal {
    pub object_id: u64,
    pub owner: &'static str,
    pub stage: &'static str,
    pub amount: &'static str,
}

/// What the HubSpot part recorded, for the summary.
pub struct Outcome {
    pub integration_id: Uuid,
    pub won: BTreeSet<String>,
}

/// 3 won deals of 2 owners and an open one, with object ids fresh per run.
pub fn deals() -> (Deal, Vec<Deal>) {
    let base = u64::from(rand::rng().random_range(100_000..900_000_u32)) * 100;
    let open = Deal {
        object_id: base,
        owner: OPEN_OWNER,
        stage: "appointmentscheduled",
        amount: "500",
    };
    let won = [("3200", OWNERS[0]), ("1800", OWNERS[1]), ("950", OWNERS[0])]
        .iter()
        .enumerate()
        .map(|(n, (amount, owner))| Deal {
            object_id: base + 1 + n as u64,
            owner,
            stage: "closedwon",
            amount,
        })
        .collect();
    (open, won)
}

/// A HubSpot webhook batch: per deal its creation, then one property change per property (the
/// stage last, as a deal is won after its owner and amount are set).
pub fn batch(portal_id: &str, deals: &[Deal]) -> String {
    let now = Utc::now().timestamp_millis();
    let portal: u64 = portal_id.parse().unwrap_or_default();
    let mut events: Vec<Value> = Vec::new();
    for d in deals {
        let changes = [
            ("hubspot_owner_id", d.owner),
            ("amount", d.amount),
            ("dealstage", d.stage),
        ];
        let mut event = |kind: &str, property: Option<(&str, &str)>| {
            let n = events.len() as u64;
            let mut e = json!({
                "eventId": d.object_id * 10 + n % 10, "subscriptionId": 2_456_001, "portalId": portal,
                "appId": 1_160_452, "occurredAt": now + n as i64, "subscriptionType": kind,
                "attemptNumber": 0, "objectId": d.object_id, "changeSource": "CRM_UI",
            });
            if let Some((name, value)) = property {
                e["propertyName"] = json!(name);
                e["propertyValue"] = json!(value);
            }
            events.push(e);
        };
        event("deal.creation", None);
        for change in changes {
            event("deal.propertyChange", Some(change));
        }
    }
    Value::Array(events).to_string()
}

/// The demo integration's client secret: the stored one, else a new one stored now. None
/// without a configured `secrets.encryption_key`.
async fn client_secret(
    ctx: &Context,
    pool: &sqlx::PgPool,
    company_id: Uuid,
    integration_id: Uuid,
) -> anyhow::Result<Option<String>> {
    let Some(key) = SecretKey::from_settings(&ctx.settings.secrets)? else {
        return Ok(None);
    };
    let stored = credentials::load(pool, integration_id, Some(&key))
        .await
        .context("reading the HubSpot demo integration's credentials")?;
    if let Some(secret) = stored.and_then(|s| s.webhook_secret) {
        return Ok(Some(secret));
    }
    let secret: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    let update = IntegrationSecrets {
        webhook_secret: Some(secret.clone()),
        ..IntegrationSecrets::default()
    };
    credentials::update(pool, &key, company_id, integration_id, update)
        .await
        .context("storing the HubSpot demo integration's client secret")?;
    println!("generated the HubSpot demo app's client secret, kept sealed in its credentials");
    Ok(Some(secret))
}

/// Posts the signed batch. Ingest caches integrations for a few seconds, so a secret stored
/// just now may be refused at first: retried for a while.
async fn post(http: &reqwest::Client, url: &str, secret: &str, body: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let timestamp = Utc::now().timestamp_millis().to_string();
        let signature = crm_sync_ingest::hubspot::signature::sign(
            secret.as_bytes(),
            "POST",
            url,
            body.as_bytes(),
            &timestamp,
        );
        let response = http
            .post(url)
            .header("content-type", "application/json")
            .header("x-hubspot-request-timestamp", &timestamp)
            .header("x-hubspot-signature-v3", signature)
            .header("x-hubspot-signature-version", "v3")
            .body(body.to_owned())
            .send()
            .await
            .with_context(|| format!("posting to ingest at {url}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        if status != reqwest::StatusCode::UNAUTHORIZED || Instant::now() >= deadline {
            anyhow::bail!("ingest refused the HubSpot webhook batch: HTTP {status}: {text}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs the HubSpot part; None when it was skipped (no encryption key).
pub async fn run(
    ctx: &Context,
    pool: &sqlx::PgPool,
    http: &reqwest::Client,
    ingest_url: &str,
    company_id: Uuid,
    (integration_id, portal_id): (Uuid, &str),
    timeout: Duration,
) -> anyhow::Result<Option<Outcome>> {
    let Some(secret) = client_secret(ctx, pool, company_id, integration_id).await? else {
        println!(
            "\n== HubSpot skipped: no secrets.encryption_key is configured, so the demo app's client \
             secret cannot be stored (deploy/local/demo.sh generates a local key)"
        );
        return Ok(None);
    };
    let (open, won) = deals();
    let url = format!("{ingest_url}/v1/integrations/{integration_id}/hubspot/webhooks");
    println!("\n== posting signed HubSpot webhook batches to {url}");
    for part in [std::slice::from_ref(&open), &won[..]] {
        post(http, &url, &secret, &batch(portal_id, part)).await?;
        let what: Vec<String> = part
            .iter()
            .map(|d| format!("deal {} {} ({})", d.object_id, d.stage, d.owner))
            .collect();
        println!("accepted: {}", what.join(", "));
    }
    let expected: BTreeSet<String> = won.iter().map(|d| d.object_id.to_string()).collect();
    wait(
        pool,
        company_id,
        &expected,
        &open.object_id.to_string(),
        timeout,
    )
    .await?;
    print_deals(pool, company_id, &expected).await?;
    Ok(Some(Outcome {
        integration_id,
        won: expected,
    }))
}

async fn wait(
    pool: &sqlx::PgPool,
    company_id: Uuid,
    expected: &BTreeSet<String>,
    open: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let activities = views::activities(pool, company_id)
            .await
            .context("reading the demo company's activities")?;
        if activities.iter().any(|a| a.record_id == open) {
            anyhow::bail!(
                "the open HubSpot deal {open} created an activity: the workflow's condition dealstage = closedwon was not applied"
            );
        }
        let missing: Vec<&String> = expected
            .iter()
            .filter(|r| !activities.iter().any(|a| mapped(a, r)))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "timed out after {}s waiting for the HubSpot deals {missing:?} to be recorded for \
                 their owners; the services' logs say why",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn print_deals(
    pool: &sqlx::PgPool,
    company_id: Uuid,
    won: &BTreeSet<String>,
) -> anyhow::Result<()> {
    let users = views::users(pool, company_id).await?;
    let mut rows: Vec<Vec<String>> = views::activities(pool, company_id)
        .await?
        .into_iter()
        .filter(|a| won.contains(&a.record_id))
        .map(|a| {
            let user = users.iter().find(|u| Some(u.id) == a.user_id);
            vec![
                format!("{} {}", a.object_type, a.record_id),
                a.crm_user_id.clone(),
                user.map(|u| format!("{} ({})", u.display_name, u.status))
                    .unwrap_or_default(),
                a.value.to_string(),
                a.activity_type.clone(),
                a.state.clone(),
            ]
        })
        .collect();
    rows.sort();
    println!("\n== HubSpot deals recorded by this run ({})", rows.len());
    print!(
        "{}",
        crate::table::render(
            &["RECORD", "HUBSPOT OWNER", "USER", "VALUE", "TYPE", "STATE"],
            &rows
        )
    );
    Ok(())
}

fn mapped(a: &ActivityView, record: &str) -> bool {
    a.record_id == record && a.state == "recorded" && a.user_id.is_some()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_sets_owner_and_amount_before_winning_each_deal() {
        let (open, won) = deals();
        assert_eq!(won.len(), 3);
        let events: Vec<Value> = serde_json::from_str(&batch("4242424", &won)).unwrap();
        assert_eq!(events.len(), 12);
        let ids: BTreeSet<u64> = events
            .iter()
            .map(|e| e["eventId"].as_u64().unwrap())
            .collect();
        assert_eq!(ids.len(), 12, "event ids are unique");
        assert!(events.iter().all(|e| e["portalId"] == 4_242_424));
        assert_eq!(events[0]["subscriptionType"], "deal.creation");
        assert_eq!(events[1]["propertyName"], "hubspot_owner_id");
        assert_eq!(events[3]["propertyValue"], "closedwon");
        assert!(won.iter().all(|d| d.object_id != open.object_id));
    }
}
