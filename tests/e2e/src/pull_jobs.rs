//! A stand-in for ingest's pull-job runner, for tests of the admin side (API, CLI, page): it
//! takes a pending job's lease and moves it along through the store functions the real runner
//! uses (claim, expected size, checkpoints, finish), so what the admin side reads is what a
//! running job writes.

use std::time::Duration;

use crm_sync_store::sync_jobs::{self, Job, Outcome, Progress};
use sqlx::PgPool;

use crate::eventually;

/// Long enough that the lease never expires during a test.
const LEASE: Duration = Duration::from_secs(600);

pub struct FakeRunner {
    pool: PgPool,
    owner: String,
    pub job: Job,
}

impl FakeRunner {
    /// Claims the next runnable job of the test's database, waiting up to `timeout` for one.
    pub async fn claim(pool: &PgPool, timeout: Duration) -> FakeRunner {
        let owner = format!("e2e-runner-{}", uuid::Uuid::new_v4().simple());
        let job = eventually("a runnable pull job", timeout, || async {
            sync_jobs::claim(pool, &owner, LEASE).await.unwrap()
        })
        .await;
        FakeRunner {
            pool: pool.clone(),
            owner,
            job,
        }
    }

    /// Claims a runnable job if there is one now.
    pub async fn try_claim(pool: &PgPool) -> Option<FakeRunner> {
        let owner = format!("e2e-runner-{}", uuid::Uuid::new_v4().simple());
        let job = sync_jobs::claim(pool, &owner, LEASE).await.unwrap()?;
        Some(FakeRunner {
            pool: pool.clone(),
            owner,
            job,
        })
    }

    /// The CRM said how many records there are to scan.
    pub async fn expect(&self, records: i64) {
        assert!(
            sync_jobs::set_expected(&self.pool, self.job.id, &self.owner, records)
                .await
                .unwrap()
        );
    }

    /// A page published: adds the counts, as the runner's checkpoint does.
    pub async fn page(&self, scanned: i64, published: i64, api_calls: i64) {
        let progress = Progress {
            checkpoint: serde_json::json!({}),
            scanned,
            published,
            api_calls,
        };
        assert!(
            sync_jobs::checkpoint(&self.pool, self.job.id, &self.owner, &progress)
                .await
                .unwrap(),
            "the fake runner lost its lease"
        );
    }

    /// Whether someone asked the job to stop (the runner checks between pages).
    pub async fn cancel_requested(&self) -> bool {
        sync_jobs::get(&self.pool, self.job.id)
            .await
            .unwrap()
            .is_some_and(|j| j.cancel_requested)
    }

    pub async fn finish(self, outcome: Outcome) {
        assert!(
            sync_jobs::finish(&self.pool, self.job.id, &self.owner, &outcome)
                .await
                .unwrap()
        );
    }
}
