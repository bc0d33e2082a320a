//! Integrations as the webhook routes need them (settings and decrypted credentials), cached for
//! `ingest.integration_cache_ms` so that a busy integration costs no database round trip per
//! request. A changed token or secret takes effect within that time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crm_sync_store::credentials::{self, IntegrationSecrets, SecretKey, SecretsError};
use crm_sync_store::integrations::{self, Integration};
use crm_sync_store::sqlx::PgPool;
use uuid::Uuid;

/// An integration with its credentials opened (or why they could not be).
#[derive(Debug)]
pub struct Resolved {
    pub integration: Integration,
    /// None: no credentials stored. An error is kept rather than raised, so that endpoints that
    /// need no credentials (Salesforce's token) keep working.
    pub secrets: Result<Option<IntegrationSecrets>, String>,
}

/// When an entry was read, and what it was (None: no such integration).
type Cache = HashMap<Uuid, (Instant, Option<Arc<Resolved>>)>;

pub struct Integrations {
    pool: PgPool,
    key: Option<SecretKey>,
    ttl: Duration,
    cache: Mutex<Cache>,
}

/// Entries kept at most; the cache is cleared beyond it (integrations are few).
const MAX_CACHED: usize = 100_000;

impl Integrations {
    pub fn new(pool: PgPool, key: Option<SecretKey>, ttl: Duration) -> Self {
        Integrations {
            pool,
            key,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The integration, or None when no integration has this id.
    pub async fn get(
        &self,
        id: Uuid,
    ) -> Result<Option<Arc<Resolved>>, crm_sync_store::sqlx::Error> {
        if let Some((at, hit)) = self.lock().get(&id)
            && at.elapsed() < self.ttl
        {
            return Ok(hit.clone());
        }
        let resolved = match integrations::find(&self.pool, id).await? {
            None => None,
            Some(integration) => {
                let secrets = match credentials::load(&self.pool, id, self.key.as_ref()).await {
                    Ok(secrets) => Ok(secrets),
                    Err(SecretsError::Database(e)) => return Err(e),
                    Err(e) => {
                        // Never the secrets themselves: the error names the key mismatch only.
                        tracing::error!(integration_id = %id, error = %e, "the integration's credentials cannot be opened");
                        Err(e.to_string())
                    }
                };
                Some(Arc::new(Resolved {
                    integration,
                    secrets,
                }))
            }
        };
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(id, (Instant::now(), resolved.clone()));
        Ok(resolved)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}
