//! The pull clients against the e2e kit's fake CRM APIs, which speak each CRM's paging, error
//! and rate-limit shapes; the jobs' leases on the real PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dynamics;
mod egress;
mod hubspot;
mod jobs;
mod leases;
mod limits;
mod pipedrive;
mod rotation;
mod salesforce;
mod schedules;

use std::time::Duration;

use chrono::{DateTime, Utc};
use crm_sync_crm_directory::{Config, Credentials, Crm, Egress};
use crm_sync_crm_pull::{Cursor, PullClient, PullConfig, PullError, Scope};
use crm_sync_e2e::fake_crm::{FakeCrm, Kind};
use crm_sync_proto::v1::{CrmEvent, FieldValue, field_value};
use uuid::Uuid;

pub const TOKEN: &str = "api-token-for-tests";

pub fn config(page_size: u32) -> PullConfig {
    PullConfig {
        api: Config {
            timeout: Duration::from_secs(5),
            attempts: 4,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(3),
            // The fake CRMs listen on 127.0.0.1 over plain http: the explicit test setting of
            // the outbound policy, and an allowlist entry for the address.
            egress: Egress {
                allow_insecure: true,
                extra_hosts: vec!["127.0.0.1".into()],
            },
            ..Config::default()
        },
        page_size,
        ..PullConfig::default()
    }
}

pub async fn start(kind: Kind) -> FakeCrm {
    FakeCrm::start(kind, TOKEN).await
}

pub fn client(fake: &FakeCrm, crm: Crm, token: &str, config: PullConfig) -> PullClient {
    PullClient::new(
        Uuid::new_v4(),
        crm,
        Credentials {
            base_url: Some(fake.url.clone()),
            access_token: Some(token.into()),
            oauth: None,
        },
        config,
    )
    .unwrap()
}

pub fn scope(object: &str, fields: &[&str]) -> Scope {
    Scope {
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        ..Scope::new(object)
    }
}

/// Every page from `since` to the end of the pass.
pub async fn pull_all(
    client: &PullClient,
    scope: &Scope,
    since: DateTime<Utc>,
) -> Result<Vec<CrmEvent>, PullError> {
    Ok(pass(client, scope, Cursor::start(since)).await?.0)
}

/// A whole pass from `cursor`: its events, and the change-tracking position it ended at.
pub async fn pass(
    client: &PullClient,
    scope: &Scope,
    mut cursor: Cursor,
) -> Result<(Vec<CrmEvent>, Option<String>), PullError> {
    let mut events = Vec::new();
    let mut delta = None;
    for _ in 0..10_000 {
        let page = client.changes(scope, &cursor).await?;
        events.extend(page.events);
        delta = page.delta.or(delta);
        match page.next {
            Some(next) => cursor = next,
            None => return Ok((events, delta)),
        }
    }
    panic!("the pass never ended");
}

pub fn text(event: &CrmEvent, field: &str) -> Option<String> {
    match event.fields.get(field)?.kind.as_ref()? {
        field_value::Kind::Text(t) | field_value::Kind::Number(t) => Some(t.clone()),
        field_value::Kind::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

pub fn kind_of(value: &FieldValue) -> &field_value::Kind {
    value.kind.as_ref().unwrap()
}

pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

pub fn occurred(event: &CrmEvent) -> DateTime<Utc> {
    let t = event.occurred_at.unwrap();
    DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}
