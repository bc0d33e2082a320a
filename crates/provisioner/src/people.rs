//! What the provisioner must respect of the people lifecycle admins drive: a deactivated user's
//! activities are recorded but do not count on leaderboards.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::apply::Cache;

/// Whether the user's activities count on leaderboards (announced `visible`): the user is on a
/// team and not deactivated. Cached for the batch's transaction.
pub(crate) async fn counts_on_leaderboards(
    tx: &mut PgConnection,
    cache: &mut Cache,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    if let Some(on) = cache.on_team.get(&user_id) {
        return Ok(*on);
    }
    let (on,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM team_memberships WHERE user_id = $1)
            AND NOT EXISTS (SELECT 1 FROM users WHERE id = $1 AND deactivated_at IS NOT NULL)",
    )
    .bind(user_id)
    .fetch_one(tx)
    .await?;
    cache.on_team.insert(user_id, on);
    Ok(on)
}
