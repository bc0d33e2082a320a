//! Answers to the evaluator's hydration requests (`crm.hydrations.v1`): the record is read whole
//! from the CRM and published as a full-snapshot `CrmEvent` on the events topic, in a Kafka
//! transaction like a webhook's, so that the evaluator instance owning the record merges it.
//!
//! Consumed at least once with the shared consume core. A request that cannot be answered (no
//! API credentials, a record the CRM no longer has, the CRM unavailable after the client's own
//! retries, a malformed request) is counted and logged, then left: the evaluator asks again on
//! the record's next event after its hydration interval, and one integration's broken CRM never
//! holds up the requests of the others on the same partition. Only our own Kafka failing is
//! retried (the consume core's backoff).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crm_sync_kafka::consume::{Failure, Incoming, MessageHandler};
use crm_sync_proto::Message as _;
use crm_sync_proto::v1::{CrmEvent, HydrationRequest};
use crm_sync_store::credentials::SecretKey;
use crm_sync_store::workflows;
use sqlx::PgPool;
use uuid::Uuid;

use crate::credentials::client_for;
use crate::jobs::Sink;
use crate::sink::KafkaSink;
use crate::worker::scopes;
use crate::{PullClient, PullConfig, PullError, Scope};

/// How long an integration's client (and its OAuth token) is reused before the credentials are
/// read again.
const CLIENT_TTL: Duration = Duration::from_secs(60);

/// A partition's hydration requests are answered one at a time, and a partition carries many
/// tenants' requests: one tenant's unresponsive CRM must hold the others for seconds, not for
/// the minutes a pull may wait (5 attempts of 30 s, `Retry-After` up to a minute). An answer
/// given up on costs little: the evaluator asks again on the record's next event.
const ATTEMPTS: u32 = 2;
const TIMEOUT: Duration = Duration::from_secs(5);
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Also the longest `Retry-After` waited for.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The pull settings with hydration's tighter limits (never looser than the pull's own).
pub fn config(pull: &PullConfig) -> PullConfig {
    PullConfig {
        api: crm_sync_crm_directory::Config {
            timeout: TIMEOUT.min(pull.api.timeout),
            attempts: ATTEMPTS.min(pull.api.attempts),
            initial_backoff: INITIAL_BACKOFF.min(pull.api.initial_backoff),
            max_backoff: MAX_BACKOFF.min(pull.api.max_backoff),
            ..pull.api.clone()
        },
        ..pull.clone()
    }
}

type Clients = HashMap<Uuid, (Instant, Arc<Result<PullClient, PullError>>)>;

pub struct Hydrator {
    pub pool: PgPool,
    pub key: SecretKey,
    pub config: PullConfig,
    pub sink: KafkaSink,
    clients: Mutex<Clients>,
}

impl Hydrator {
    /// `pull`: the pull jobs' settings, tightened for hydration (see [`config`]).
    pub fn new(pool: PgPool, key: SecretKey, pull: PullConfig, sink: KafkaSink) -> Hydrator {
        Hydrator {
            pool,
            key,
            config: config(&pull),
            sink,
            clients: Mutex::new(HashMap::new()),
        }
    }

    async fn client(
        &self,
        integration_id: Uuid,
    ) -> Result<Arc<Result<PullClient, PullError>>, Failure> {
        if let Some((at, client)) = self.lock().get(&integration_id)
            && at.elapsed() < CLIENT_TTL
        {
            return Ok(client.clone());
        }
        let client = client_for(&self.pool, &self.key, &self.config, integration_id)
            .await
            .map_err(Failure::database)?;
        let client = Arc::new(client);
        let mut clients = self.lock();
        if clients.len() > 10_000 {
            clients.clear();
        }
        clients.insert(integration_id, (Instant::now(), client.clone()));
        Ok(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Clients> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The object with the fields the request misses and those the workflows read.
    async fn scope(
        &self,
        request: &HydrationRequest,
        integration_id: Uuid,
    ) -> Result<Scope, Failure> {
        let active = workflows::load_active_of(&self.pool, integration_id)
            .await
            .map_err(Failure::database)?;
        let mut scope = scopes(&active, std::slice::from_ref(&request.object_type))
            .pop()
            .unwrap_or_else(|| Scope::new(request.object_type.clone()));
        for field in &request.missing_fields {
            if crate::worker::plain_name(field) && !scope.fields.contains(field) {
                scope.fields.push(field.clone());
            }
        }
        Ok(scope)
    }

    async fn answer(&self, request: &HydrationRequest) -> Result<&'static str, Failure> {
        let Ok(integration_id) = Uuid::parse_str(&request.integration_id) else {
            return Ok("invalid");
        };
        let client = self.client(integration_id).await?;
        let client = match client.as_ref() {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(%integration_id, record_id = %request.record_id, error = %error, "hydration request left unanswered: the integration's API cannot be used");
                return Ok("no_credentials");
            }
        };
        let scope = self.scope(request, integration_id).await?;
        let event = match client.record(&scope, &request.record_id).await {
            Ok(Some(event)) => CrmEvent {
                source_delivery_id: format!("hydration:{}", request.request_id),
                ..event
            },
            Ok(None) => return Ok("not_found"),
            Err(error) => {
                if matches!(
                    error,
                    PullError::Api(crm_sync_crm_directory::LookupError::Unauthorized(_))
                ) {
                    // Credentials may have been changed: read them again next time.
                    self.lock().remove(&integration_id);
                }
                tracing::warn!(%integration_id, record_id = %request.record_id, error = %error, "hydration request left unanswered");
                return Ok(if error.is_transient() {
                    "unavailable"
                } else {
                    "refused"
                });
            }
        };
        let published = self.sink.publish(vec![event]).await.map_err(|e| {
            Failure::transient(anyhow::anyhow!("publishing a hydrated record: {e}"))
        })?;
        // Refused: dead-lettered with the reason.
        Ok(if published == 1 {
            "published"
        } else {
            "refused"
        })
    }
}

impl MessageHandler for Hydrator {
    async fn handle(&self, message: &Incoming<'_>) -> Result<(), Failure> {
        let outcome = match message.payload.map(HydrationRequest::decode) {
            Some(Ok(request)) => self.answer(&request).await?,
            _ => "invalid",
        };
        metrics::counter!(crate::metric_definitions::HYDRATIONS, "outcome" => outcome).increment(1);
        if outcome == "invalid" {
            tracing::warn!(
                partition = message.partition,
                offset = message.offset,
                "an unreadable hydration request was skipped"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use crm_sync_crm_directory::{Credentials, Crm, Egress};
    use crm_sync_e2e::fake_crm::{FakeCrm, Kind};

    use super::*;

    #[tokio::test]
    async fn a_crm_that_keeps_asking_to_wait_is_given_up_on_within_seconds() {
        let fake = FakeCrm::start(Kind::Salesforce, "token").await;
        for _ in 0..5 {
            fake.fail_next(
                429,
                Some(20),
                r#"[{"errorCode":"REQUEST_LIMIT_EXCEEDED","message":"ConcurrentPerOrgLongTxn Limit exceeded."}]"#,
            );
        }
        // The settings ingest runs pulls with, as the worker hands them to the hydrator.
        let mut pull = PullConfig::default();
        pull.api.egress = Egress {
            allow_insecure: true,
            extra_hosts: vec!["127.0.0.1".into()],
        };
        let credentials = Credentials {
            base_url: Some(fake.url.clone()),
            access_token: Some("token".into()),
            oauth: None,
        };
        let client =
            PullClient::new(Uuid::new_v4(), Crm::Salesforce, credentials, config(&pull)).unwrap();
        let answered = tokio::time::timeout(
            Duration::from_secs(3),
            client.record(&Scope::new("Opportunity"), "006000000000000001"),
        )
        .await;
        let Ok(Err(error)) = answered else {
            panic!("given up within seconds, as unavailable: {answered:?}");
        };
        assert!(error.is_transient(), "{error}");
    }
}
