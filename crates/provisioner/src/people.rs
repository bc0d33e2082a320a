//! The people lifecycle on the provisioner's side: a deactivated user's activities are recorded
//! but do not count on leaderboards, and a user the CRM says is inactive is deactivated.

use anyhow::Context as _;
use crm_sync_outbox::{Outbox, Pending, Staged};
use crm_sync_proto::Message as _;
use crm_sync_proto::announce::{UserFacts, user_provisioned};
use crm_sync_proto::v1::{ActivityState, UserStatus};
use crm_sync_store::announce::Announcements;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

mod listener;
pub use listener::CrmInactive;

/// Namespace of the ids of the announcements of CRM deactivations.
const NAMESPACE: Uuid = Uuid::from_u128(0x51c0_9d3e_7a24_4f86_b0e1_6c2d_93a7_58f4);

/// Whether the user's activities count on leaderboards (announced `visible`): the user is on a
/// team and not deactivated.
async fn counts_on_leaderboards(tx: &mut PgConnection, user_id: Uuid) -> Result<bool, sqlx::Error> {
    let visible = crm_sync_store::provisioning::users::on_leaderboards(tx, &[user_id]).await?;
    Ok(visible.get(&user_id).copied().unwrap_or(false))
}

/// Where the announcements of a deactivation go.
#[derive(Debug, Clone, Copy)]
pub struct Topics<'a> {
    pub users: &'a str,
    pub activities: &'a str,
}

/// Identities deactivated per pass.
const BATCH: i64 = 100;

/// Deactivates the platform users whose CRM user the CRM said is inactive (a directory lookup
/// or the CRM's own user event), where the integration says so (`deactivate_with_crm`, on by
/// default): each in a transaction of its own that audits it and stages the announcements (the
/// user as inactive, its activities as no longer visible), published right after commit. A user
/// an admin reactivated afterwards stays active until the CRM reports the user inactive again.
/// Each identity is taken under its row lock and checked again, so that passes running at once
/// (every provisioner replica runs them when notified) deactivate and announce each user
/// once. Returns how many were deactivated, and whether more may be due.
pub async fn deactivate_inactive_in_crm(
    pool: &PgPool,
    outbox: &Outbox,
    topics: Topics<'_>,
) -> anyhow::Result<Pass> {
    let due: Vec<(Uuid, Uuid, String, Uuid)> = sqlx::query_as(
        "SELECT ci.company_id, ci.integration_id, ci.crm_user_id, ci.user_id
         FROM crm_identities ci JOIN integrations i ON i.id = ci.integration_id
         WHERE ci.crm_active = false AND ci.crm_inactive_applied_at IS NULL
           AND ci.user_id IS NOT NULL AND i.deactivate_with_crm
         LIMIT $1",
    )
    .bind(BATCH)
    .fetch_all(pool)
    .await
    .context("finding users the CRM says are inactive")?;
    let mut pass = Pass {
        deactivated: 0,
        more: due.len() as i64 == BATCH,
    };
    for (company_id, integration_id, crm_user_id, user_id) in due {
        let batch = format!("provisioner/crm-inactive/{}", Uuid::new_v4());
        let mut tx = pool.begin().await?;
        if !still_due(&mut tx, integration_id, &crm_user_id, user_id).await? {
            continue;
        }
        let mut staged = Staged::default();
        let deactivated = deactivate_one(
            &mut tx,
            (&batch, &mut staged),
            topics,
            (company_id, integration_id, &crm_user_id, user_id),
        )
        .await
        .with_context(|| format!("deactivating user {user_id} (CRM user {crm_user_id})"))?;
        sqlx::query(
            "UPDATE crm_identities SET crm_inactive_applied_at = now()
             WHERE integration_id = $1 AND crm_user_id = $2",
        )
        .bind(integration_id)
        .bind(&crm_user_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if deactivated {
            pass.deactivated += 1;
            tracing::info!(%user_id, %integration_id, crm_user_id, "deactivated the user: the CRM says they are inactive");
        }
        // Committed: if publishing fails now, the outbox relay sends the rows later.
        outbox.publish(staged).await?;
    }
    Ok(pass)
}

/// What one pass of [`deactivate_inactive_in_crm`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub deactivated: usize,
    /// The pass took a full batch: more identities may be due.
    pub more: bool,
}

/// Locks the identity if it is still due for deactivation: another pass (this replica's or
/// another's) that holds it or has applied it is left alone.
async fn still_due(
    tx: &mut PgConnection,
    integration_id: Uuid,
    crm_user_id: &str,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i32,)> = sqlx::query_as(
        "SELECT 1 FROM crm_identities ci JOIN integrations i ON i.id = ci.integration_id
         WHERE ci.integration_id = $1 AND ci.crm_user_id = $2 AND ci.user_id = $3
           AND ci.crm_active = false AND ci.crm_inactive_applied_at IS NULL AND i.deactivate_with_crm
         FOR UPDATE OF ci SKIP LOCKED",
    )
    .bind(integration_id)
    .bind(crm_user_id)
    .bind(user_id)
    .fetch_optional(tx)
    .await?;
    Ok(row.is_some())
}

/// Deactivates the user (if not already) and stages what downstream must learn of it.
async fn deactivate_one(
    tx: &mut PgConnection,
    (batch, staged): (&str, &mut Staged),
    topics: Topics<'_>,
    (company_id, integration_id, crm_user_id, user_id): (Uuid, Uuid, &str, Uuid),
) -> anyhow::Result<bool> {
    let visible_before = counts_on_leaderboards(tx, user_id).await?;
    let user: Option<(String, Option<String>)> = sqlx::query_as(
        "UPDATE users SET deactivated_at = now(), deactivated_by = 'crm', updated_at = now()
         WHERE id = $1 AND deactivated_at IS NULL RETURNING display_name, email",
    )
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((display_name, email)) = user else {
        return Ok(false);
    };
    let key = format!("{company_id}/{user_id}");
    let pending = |topic: &str, message_id: String, payload: Vec<u8>| Pending {
        topic: topic.to_owned(),
        key: key.clone(),
        message_id,
        payload,
    };
    if visible_before {
        stage_hidden_activities(
            tx,
            (batch, &mut *staged),
            topics.activities,
            company_id,
            user_id,
        )
        .await?;
    }
    let event_id = Uuid::new_v5(&NAMESPACE, format!("{user_id}\u{1f}{batch}").as_bytes());
    let announcement = user_provisioned(
        event_id,
        &UserFacts {
            company_id,
            user_id,
            integration_id: Some(integration_id),
            crm_user_id,
            display_name: &display_name,
            email: email.as_deref(),
            status: UserStatus::Inactive,
            linked_existing_user: false,
            merged_user_ids: &[],
        },
    );
    let message = pending(
        topics.users,
        announcement.event_id.clone(),
        announcement.encode_to_vec(),
    );
    staged.stage(tx, batch, message).await?;
    let actor = crm_sync_store::admin::audit::Actor {
        token_id: None,
        name: "provisioner (the CRM says the user is inactive)".into(),
    };
    crm_sync_store::admin::audit::record(
        tx,
        company_id,
        &actor,
        "user.deactivated",
        "user",
        &user_id.to_string(),
        serde_json::json!({"by": "crm", "integration_id": integration_id, "crm_user_id": crm_user_id}),
    )
    .await?;
    Ok(true)
}

/// Stages an `ActivityChanged` for each recorded activity of the user, no longer visible.
async fn stage_hidden_activities(
    tx: &mut PgConnection,
    (batch, staged): (&str, &mut Staged),
    topic: &str,
    company_id: Uuid,
    user_id: Uuid,
) -> anyhow::Result<()> {
    let recorded = crm_sync_store::admin::activities::recorded_of_user(tx, user_id).await?;
    let messages = Announcements {
        batch,
        namespace: NAMESPACE,
        topic,
        company_id,
    }
    .activities_changed(&recorded, ActivityState::Recorded, false);
    let rows = messages.into_iter().map(|m| (0, batch, m)).collect();
    staged.stage_all(tx, rows).await?;
    Ok(())
}
