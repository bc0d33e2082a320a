//! The periodic re-check of mapped CRM users: the directory is asked again about every CRM user
//! with a platform account once `directory.recheck_interval_secs` (a day) has passed since it last
//! answered, so that a user deactivated in the CRM after their account was made is deactivated
//! here too (where the integration's `deactivate_with_crm` says so), and one reactivated there
//! can be deactivated again later. A few users per round, oldest answer first, so that a large
//! company's users are spread over the day instead of spending its API limit at once.

use chrono::Utc;
use uuid::Uuid;

use super::{BATCH, Directory};

impl Directory {
    /// One round; returns how many users were asked about.
    pub(crate) async fn recheck_round(&self) -> anyhow::Result<usize> {
        if self.recheck.is_zero() {
            return Ok(0);
        }
        let stale_before = Utc::now() - chrono::Duration::from_std(self.recheck)?;
        let due: Vec<(Uuid, Uuid, String, String)> = sqlx::query_as(
            "SELECT ci.company_id, ci.integration_id, ci.crm_user_id, i.crm
             FROM crm_identities ci JOIN integrations i ON i.id = ci.integration_id
             WHERE ci.user_id IS NOT NULL AND ci.directory_state IN ('complete', 'not_found')
               AND ci.directory_checked_at < $1
             ORDER BY ci.directory_checked_at LIMIT $2",
        )
        .bind(stale_before)
        .bind(BATCH)
        .fetch_all(&self.pool)
        .await?;
        let mut asked = 0;
        for (company_id, integration_id, crm_user_id, crm) in due {
            // Asked or not (no API credentials any more), not again before the interval.
            sqlx::query(
                "UPDATE crm_identities SET directory_checked_at = now()
                 WHERE integration_id = $1 AND crm_user_id = $2",
            )
            .bind(integration_id)
            .bind(&crm_user_id)
            .execute(&self.pool)
            .await?;
            let Some(client) = self.client(integration_id, &crm).await? else {
                continue;
            };
            let result = client.lookup_fresh(&crm_user_id).await;
            self.forget_refused(integration_id, &result);
            // A transient failure leaves the identity to the completion's retries.
            self.record(company_id, integration_id, &crm_user_id, 0, &result)
                .await?;
            metrics::counter!(crate::metric_definitions::DIRECTORY_RECHECKS, "result" => match &result {
                Ok(user) if user.active == Some(false) => "inactive",
                Ok(_) => "active",
                Err(e) if e.is_transient() => "retry",
                Err(_) => "failed",
            })
            .increment(1);
            asked += 1;
        }
        Ok(asked)
    }
}
