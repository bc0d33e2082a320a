//! The end of `crm-sync demo`: the demo's new users placed on the team `Sales` through admin-api
//! (as an admin would in the page, so their activities are announced visible), and the
//! company's `deal_won` leaderboard with Salesforce's and HubSpot's deals together.

use anyhow::Context as _;
use crm_sync_store::admin::activities::{LeaderboardQuery, leaderboard};
use crm_sync_store::admin::audit::Actor;
use crm_sync_store::admin::tokens::{self, Role};
use crm_sync_store::views;
use uuid::Uuid;

use crate::table;

/// Places every user of the demo's integrations that is on no team on `team` through admin-api,
/// with a short-lived admin token revoked afterwards. Without admin-api it says how to do it.
pub async fn place_on_team(
    pool: &sqlx::PgPool,
    http: &reqwest::Client,
    admin_url: &str,
    (company_id, team_id, team_name): (Uuid, Uuid, &str),
    integrations: &[Uuid],
) -> anyhow::Result<()> {
    let users = views::users(pool, company_id).await?;
    let waiting: Vec<&views::UserView> = users
        .iter()
        .filter(|u| u.teams.is_empty())
        .filter(|u| {
            integrations.iter().any(|i| {
                u.crm_identities
                    .iter()
                    .any(|c| c.starts_with(&format!("{i}:")))
            })
        })
        .collect();
    if waiting.is_empty() {
        return Ok(());
    }
    let created = tokens::create(pool, company_id, Role::Admin, Some("crm-sync demo"), 1)
        .await
        .context("creating a token for the demo's admin-api calls")?;
    let base = admin_url.trim_end_matches('/');
    println!("\n== placing the new users on team {team_name} through admin-api at {base}");
    let mut result = Ok(());
    for u in waiting {
        let url = format!(
            "{base}/admin/v1/companies/{company_id}/teams/{team_id}/members/{}",
            u.id
        );
        match http.put(&url).bearer_auth(&created.bearer).send().await {
            Ok(r) if r.status().is_success() => {
                println!("placed {} on {team_name}", u.display_name)
            }
            Ok(r) => {
                result = Err(anyhow::anyhow!(
                    "admin-api refused to place {} on {team_name}: HTTP {}",
                    u.display_name,
                    r.status()
                ));
                break;
            }
            Err(e) => {
                println!(
                    "admin-api is not reachable at {base} ({e}): place the users on {team_name} in \
                     its page to see them on the leaderboard (or pass --admin-url)"
                );
                break;
            }
        }
    }
    let cli = Actor {
        token_id: None,
        name: "cli".into(),
    };
    tokens::revoke(pool, Some(company_id), created.token.id, &cli)
        .await
        .context("revoking the demo's token")?;
    result
}

/// The company's `deal_won` leaderboard, as admin-api answers it: only users on a team.
pub async fn print(pool: &sqlx::PgPool, company_id: Uuid) -> anyhow::Result<()> {
    let query = LeaderboardQuery {
        activity_type: "deal_won".into(),
        from: None,
        to: None,
        team_id: None,
    };
    let rows: Vec<Vec<String>> = leaderboard(pool, company_id, &query, 0, 20)
        .await
        .context("reading the leaderboard")?
        .into_iter()
        .map(|r| {
            vec![
                r.rank.to_string(),
                r.display_name,
                r.total.to_string(),
                r.count.to_string(),
                r.team_names.join(", "),
            ]
        })
        .collect();
    println!("\n== leaderboard, deal_won (Salesforce and HubSpot deals together)");
    print!(
        "{}",
        table::render(&["RANK", "USER", "TOTAL", "DEALS", "TEAMS"], &rows)
    );
    Ok(())
}
