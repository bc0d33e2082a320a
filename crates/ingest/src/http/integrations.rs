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

/// Entries kept at most (integrations are few; ids that name none are not).
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
        remember(&mut self.lock(), id, resolved.clone(), self.ttl, MAX_CACHED);
        Ok(resolved)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Caches an answer, making room when the cache is full: first by dropping what expired, then
/// the ids that named no integration. Requests naming random ids (a scan, a misconfigured
/// sender) fill the cache with those; they must not push out the integrations in use, whose
/// every request would then wait for the database again.
fn remember(
    cache: &mut Cache,
    id: Uuid,
    resolved: Option<Arc<Resolved>>,
    ttl: Duration,
    max: usize,
) {
    if cache.len() >= max {
        cache.retain(|_, (at, _)| at.elapsed() < ttl);
    }
    if cache.len() >= max {
        cache.retain(|_, (_, hit)| hit.is_some());
    }
    if cache.len() >= max {
        cache.clear();
    }
    cache.insert(id, (Instant::now(), resolved));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integration(id: Uuid) -> Arc<Resolved> {
        Arc::new(Resolved {
            integration: Integration {
                id,
                company_id: Uuid::new_v4(),
                name: "live".into(),
                crm: "salesforce".into(),
                crm_account_id: "00D".into(),
                auto_sync_users: false,
                webhook_token_sha256: None,
            },
            secrets: Ok(None),
        })
    }

    #[test]
    fn ids_naming_no_integration_do_not_push_out_the_integrations_in_use() {
        let ttl = Duration::from_secs(60);
        let mut cache = Cache::new();
        let live = Uuid::new_v4();
        remember(&mut cache, live, Some(integration(live)), ttl, 10);
        for _ in 0..100 {
            remember(&mut cache, Uuid::new_v4(), None, ttl, 10);
            assert!(cache.len() <= 10);
        }
        assert!(cache.get(&live).is_some_and(|(_, hit)| hit.is_some()));
    }

    #[test]
    fn expired_answers_make_room_first() {
        let mut cache = Cache::new();
        let old = Uuid::new_v4();
        remember(&mut cache, old, None, Duration::ZERO, 1);
        let new = Uuid::new_v4();
        remember(&mut cache, new, None, Duration::ZERO, 1);
        assert_eq!(cache.len(), 1);
        assert!(cache.contains_key(&new));
    }
}
