//! The events: Salesforce Outbound Messages posted to ingest at a steady rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crm_sync_e2e::Tenant;
use crm_sync_e2e::salesforce::{Notification, outbound_message, won_opportunity};

use crate::{amount, notification_id, owner, record_id};

/// Notifications per Outbound Message.
const BATCH: usize = 10;

/// How the sending went: events acknowledged, and requests that had to be retried.
#[derive(Default)]
pub struct Sent {
    pub posted: AtomicU64,
    pub retries: AtomicU64,
}

/// Posts every event in batches at a steady rate, retrying each batch until ingest acknowledges
/// it, the way Salesforce retries an Outbound Message.
pub async fn send_all(
    events: usize,
    owners: usize,
    rate: f64,
    port: u16,
    tenant: Tenant,
    sent: Arc<Sent>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}{}", tenant.outbound_message_path());
    let interval = Duration::from_secs_f64(BATCH as f64 / rate);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = tokio::task::JoinSet::new();
    for start in (0..events).step_by(BATCH) {
        ticker.tick().await;
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        let ids: Vec<(String, String, String, String)> = (start..(start + BATCH).min(events))
            .map(|i| {
                (
                    notification_id(i),
                    record_id(i),
                    owner(i, owners),
                    amount(i),
                )
            })
            .collect();
        let notifications: Vec<Notification<'_>> = ids
            .iter()
            .map(|(n, r, o, a)| won_opportunity(n, r, o, a))
            .collect();
        let xml = outbound_message(&tenant.organization_id, &notifications);
        let (client, url, sent) = (client.clone(), url.clone(), sent.clone());
        let count = ids.len() as u64;
        tasks.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut backoff = Duration::from_millis(100);
            loop {
                let ok = match client
                    .post(&url)
                    .header("content-type", "text/xml")
                    .body(xml.clone())
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        r.text().await.is_ok_and(|b| b.contains("<Ack>true</Ack>"))
                    }
                    _ => false,
                };
                if ok {
                    sent.posted.fetch_add(count, Ordering::Relaxed);
                    break;
                }
                sent.retries.fetch_add(1, Ordering::Relaxed);
                assert!(
                    Instant::now() < deadline,
                    "ingest did not accept a batch within 300 s"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            drop(permit);
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
}
