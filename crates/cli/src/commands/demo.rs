//! `crm-sync demo [--ingest-url URL] [--ingest-ops-url URL]`: the headline feature end to end, against a running stack
//! and running services (ingest, workflow-evaluator, provisioner).
//!
//! It applies the built-in demo tenant (`deploy/local/demo-tenant.yaml`), posts Salesforce
//! Outbound Messages to ingest (6 won opportunities for 3 owners, one batch of 3 among them,
//! plus one open opportunity by a 4th owner that must create nothing), then waits for the
//! pipeline to have recorded the activities and created the users, and prints both. Record and
//! notification ids are fresh per run, so a second run adds activities but no users.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{Days, Utc};
use crm_sync_store::views::{self, ActivityView, UserView};
use rand::Rng;
use rand::distr::Alphanumeric;
use uuid::Uuid;

use crate::commands::apply;
use crate::context::Context;
use crate::table;
use crate::tenants_file::{Crm, TenantsFile};

pub const DEMO_TENANT: &str = include_str!("../../../../deploy/local/demo-tenant.yaml");
const DEMO_TENANT_NAME: &str = "demo-tenant.yaml (built in)";

pub struct DemoArgs {
    pub ingest_url: String,
    /// Where ingest's `/readyz` is (its ops port).
    pub ingest_ops_url: String,
    /// admin-api, which places the demo's users on the team `Sales`.
    pub admin_url: String,
    pub timeout: Duration,
}

/// The CRM users that own the demo's won opportunities.
const OWNERS: [&str; 3] = [
    "005000000000DEMOA1",
    "005000000000DEMOA2",
    "005000000000DEMOA3",
];
/// Owns only the open opportunity: the pipeline must neither record it nor create this user.
const OPEN_OWNER: &str = "005000000000DEMOA4";
const ACTION_ID: &str = "04k000000000DEMOAA";

/// One notification of an Outbound Message.
#[derive(Debug, Clone)]
pub struct Opportunity {
    pub notification_id: String,
    pub record_id: String,
    pub name: String,
    pub owner: &'static str,
    pub stage: &'static str,
    pub amount: &'static str,
    pub close_date: String,
}

pub async fn run(ctx: &Context, args: DemoArgs) -> anyhow::Result<()> {
    let file = TenantsFile::parse(DEMO_TENANT_NAME, DEMO_TENANT)?;
    let company = file
        .companies
        .first()
        .context("the demo tenant file declares no company")?;
    let integration = company
        .integrations
        .iter()
        .find(|i| i.crm == Crm::Salesforce)
        .context("the demo tenant file declares no Salesforce integration")?;
    let token = integration
        .webhook_token
        .as_ref()
        .context("the demo tenant's Salesforce integration has no webhook_token")?
        .expose()
        .to_owned();
    let org_id = integration.crm_account_id.0.clone();

    let pool = ctx.pool().await?;
    // The services may have migrated already; this makes the demo work on a fresh database too.
    crm_sync_store::migrate(&pool).await?;
    let applied = apply::apply(&pool, &file)
        .await
        .context("applying the demo tenant")?;
    println!("== demo tenant");
    apply::print_summary(&mut std::io::stdout(), DEMO_TENANT_NAME, &applied)?;
    let applied_company = applied
        .companies
        .first()
        .context("applying the demo tenant returned no company")?;
    let company_id = applied_company.id;
    let integration_id = applied_company
        .integrations
        .iter()
        .find(|i| i.crm == Crm::Salesforce)
        .map(|i| i.id)
        .context("applying the demo tenant returned no Salesforce integration")?;

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let base = args.ingest_url.trim_end_matches('/');
    check_ingest_ready(&http, args.ingest_ops_url.trim_end_matches('/')).await?;

    let run_id = run_id();
    let (open, won) = opportunities(&run_id);
    // The open one goes first, so it has long been evaluated when the won ones are recorded.
    let posts: Vec<Vec<Opportunity>> = vec![
        vec![open.clone()],
        won[0..3].to_vec(),
        vec![won[3].clone()],
        vec![won[4].clone()],
        vec![won[5].clone()],
    ];
    let url = format!("{base}/v1/integrations/{integration_id}/salesforce/outbound-messages");
    println!("\n== posting Salesforce Outbound Messages to {url} (run {run_id})");
    post_outbound_messages(&http, &url, &token, &org_id, &posts).await?;

    println!(
        "\n== waiting for the pipeline (up to {}s)",
        args.timeout.as_secs()
    );
    let expected: BTreeSet<&str> = won.iter().map(|o| o.record_id.as_str()).collect();
    let (users, activities) =
        wait_for_pipeline(&pool, company_id, integration_id, &expected, args.timeout).await?;

    nothing_from_the_open_one(&open, &users, &activities, integration_id)?;
    print_results(&users, &activities, integration_id, &expected);
    println!(
        "\nThe open opportunity {} ({OPEN_OWNER}) created nothing, as it satisfies no active workflow.",
        open.record_id
    );
    hubspot_and_leaderboard(ctx, &pool, &http, base, company, applied_company, &args).await?;
    Ok(())
}

/// Posts each batch as one Outbound Message; every one must be acknowledged.
async fn post_outbound_messages(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    org_id: &str,
    posts: &[Vec<Opportunity>],
) -> anyhow::Result<()> {
    for batch in posts {
        let body = outbound_message(org_id, batch);
        let response = http
            .post(url)
            .query(&[("token", token)])
            .header("content-type", "text/xml; charset=utf-8")
            .header("SOAPAction", "\"\"")
            .body(body)
            .send()
            .await
            .with_context(|| format!("posting to ingest at {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() || !text.contains("<Ack>true</Ack>") {
            anyhow::bail!(
                "ingest did not acknowledge the Outbound Message with {} notification(s): HTTP {status}: {}",
                batch.len(),
                truncate(&text, 500)
            );
        }
        let what: Vec<String> = batch
            .iter()
            .map(|o| format!("{} {} ({})", o.record_id, o.stage, o.owner))
            .collect();
        println!("acknowledged: {}", what.join(", "));
    }
    Ok(())
}

/// The open opportunity satisfies no active workflow: it must have made no activity and no user.
fn nothing_from_the_open_one(
    open: &Opportunity,
    users: &[UserView],
    activities: &[ActivityView],
    integration_id: Uuid,
) -> anyhow::Result<()> {
    let open_effects: Vec<&ActivityView> = activities
        .iter()
        .filter(|a| a.record_id == open.record_id)
        .collect();
    if !open_effects.is_empty() {
        anyhow::bail!(
            "the open opportunity {} created an activity ({}): the workflow's condition \
             StageName = Closed Won was not applied",
            open.record_id,
            open_effects[0].id
        );
    }
    let open_identity = format!("{integration_id}:{OPEN_OWNER}");
    if users
        .iter()
        .any(|u| u.crm_identities.contains(&open_identity))
    {
        anyhow::bail!(
            "a user was created for {OPEN_OWNER}, who only owns the open opportunity: an event \
             that satisfies no active workflow must create no user"
        );
    }
    Ok(())
}

/// HubSpot beside Salesforce (the same company, the same leaderboard), the new users placed on
/// `Sales`, and the leaderboard.
async fn hubspot_and_leaderboard(
    ctx: &Context,
    pool: &sqlx::PgPool,
    http: &reqwest::Client,
    base: &str,
    company: &crate::tenants_file::CompanyEntry,
    applied_company: &apply::AppliedCompany,
    args: &DemoArgs,
) -> anyhow::Result<()> {
    let company_id = applied_company.id;
    if let Some(hubspot) = applied_company
        .integrations
        .iter()
        .find(|i| i.crm == Crm::Hubspot)
    {
        let portal = company
            .integrations
            .iter()
            .find(|i| i.crm == Crm::Hubspot)
            .map(|i| i.crm_account_id.0.clone())
            .unwrap_or_default();
        let hubspot_part = (hubspot.id, portal.as_str());
        crate::commands::demo_hubspot::run(
            ctx,
            pool,
            http,
            base,
            company_id,
            hubspot_part,
            args.timeout,
        )
        .await?;
    }
    let sales = applied_company.teams.iter().find(|t| t.name == "Sales");
    if let Some(team) = sales {
        let demo_integrations: Vec<Uuid> =
            applied_company.integrations.iter().map(|i| i.id).collect();
        crate::commands::demo_leaderboard::place_on_team(
            pool,
            http,
            &args.admin_url,
            (company_id, team.id, &team.name),
            &demo_integrations,
        )
        .await?;
    }
    crate::commands::demo_leaderboard::print(pool, company_id).await?;
    Ok(())
}

async fn check_ingest_ready(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let url = format!("{base}/readyz");
    let response = http.get(&url).send().await.map_err(|e| {
        anyhow::anyhow!(
            "ingest is not reachable at {base} ({e}); start the services first (ingest, \
             workflow-evaluator, provisioner) against this Kafka and database, or pass --ingest-ops-url"
        )
    })?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!(
            "ingest at {base} is not ready: HTTP {status}: {}",
            truncate(&body, 300)
        );
    }
    Ok(())
}

/// Polls until every expected record has a recorded activity mapped to a user and every owner
/// has a user, or the deadline passes with an error naming what is missing.
async fn wait_for_pipeline(
    pool: &sqlx::PgPool,
    company_id: Uuid,
    integration_id: Uuid,
    expected: &BTreeSet<&str>,
    timeout: Duration,
) -> anyhow::Result<(Vec<UserView>, Vec<ActivityView>)> {
    let deadline = Instant::now() + timeout;
    loop {
        let users = views::users(pool, company_id)
            .await
            .context("reading the demo company's users")?;
        let activities = views::activities(pool, company_id)
            .await
            .context("reading the demo company's activities")?;
        let missing = missing_parts(&users, &activities, integration_id, expected);
        if missing.is_empty() {
            return Ok((users, activities));
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "timed out after {}s waiting for the pipeline; still missing:\n  - {}\n\
                 Are workflow-evaluator and provisioner running against the same Kafka topics and \
                 database as ingest? Their logs say why an event was not processed.",
                timeout.as_secs(),
                missing.join("\n  - ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn missing_parts(
    users: &[UserView],
    activities: &[ActivityView],
    integration_id: Uuid,
    expected: &BTreeSet<&str>,
) -> Vec<String> {
    let mut missing = Vec::new();
    for record in expected {
        match activities.iter().find(|a| a.record_id == *record) {
            None => missing.push(format!("activity for won opportunity {record}")),
            Some(a) if a.state != "recorded" => missing.push(format!(
                "activity for {record} is {} instead of recorded",
                a.state
            )),
            Some(a) if a.user_id.is_none() => missing.push(format!(
                "activity for {record} is recorded but not mapped to a user (CRM owner {})",
                a.crm_user_id
            )),
            Some(_) => {}
        }
    }
    for owner in OWNERS {
        let identity = format!("{integration_id}:{owner}");
        if !users.iter().any(|u| u.crm_identities.contains(&identity)) {
            missing.push(format!("user for CRM owner {owner} (auto-sync is on)"));
        }
    }
    missing
}

fn print_results(
    users: &[UserView],
    activities: &[ActivityView],
    integration_id: Uuid,
    expected: &BTreeSet<&str>,
) {
    let prefix = format!("{integration_id}:");
    let crm_id_of = |u: &UserView| -> String {
        let ids: Vec<&str> = u
            .crm_identities
            .iter()
            .filter_map(|i| i.strip_prefix(&prefix))
            .collect();
        ids.join(", ")
    };
    let demo_users: Vec<&UserView> = users
        .iter()
        .filter(|u| u.crm_identities.iter().any(|i| i.starts_with(&prefix)))
        .collect();
    let user_rows: Vec<Vec<String>> = demo_users
        .iter()
        .map(|u| {
            vec![
                u.display_name.clone(),
                u.email.clone().unwrap_or_default(),
                u.status.clone(),
                crm_id_of(u),
                u.teams.join(", "),
            ]
        })
        .collect();
    println!(
        "\n== users of the demo integration ({}; one per CRM owner, however often the demo runs)",
        demo_users.len()
    );
    print!(
        "{}",
        table::render(&["NAME", "EMAIL", "STATUS", "CRM ID", "TEAMS"], &user_rows)
    );

    let names: BTreeMap<Uuid, &str> = users
        .iter()
        .map(|u| (u.id, u.display_name.as_str()))
        .collect();
    let mut this_run: Vec<&ActivityView> = activities
        .iter()
        .filter(|a| expected.contains(a.record_id.as_str()))
        .collect();
    this_run.sort_by(|a, b| a.record_id.cmp(&b.record_id));
    let activity_rows: Vec<Vec<String>> = this_run
        .iter()
        .map(|a| {
            // Without CRM API access the provisioner may only know the CRM id as the name.
            let owner = match a.user_id.and_then(|id| names.get(&id)) {
                Some(name) if *name != a.crm_user_id => format!("{name} ({})", a.crm_user_id),
                Some(_) => a.crm_user_id.clone(),
                None => format!("unmapped ({})", a.crm_user_id),
            };
            vec![
                format!("{} {}", a.object_type, a.record_id),
                owner,
                a.value.to_string(),
                a.activity_date.format("%Y-%m-%d").to_string(),
                a.activity_type.clone(),
                a.state.clone(),
            ]
        })
        .collect();
    println!(
        "\n== activities recorded by this run ({})",
        activity_rows.len()
    );
    print!(
        "{}",
        table::render(
            &["RECORD", "OWNER", "VALUE", "DATE", "TYPE", "STATE"],
            &activity_rows
        )
    );
}

/// Eight random characters, uppercase, so Salesforce-style ids stay unique across runs.
fn run_id() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(8)
        .map(|c| char::from(c).to_ascii_uppercase())
        .collect()
}

/// (the open opportunity, the 6 won ones: two per owner).
pub fn opportunities(run_id: &str) -> (Opportunity, Vec<Opportunity>) {
    const AMOUNTS: [&str; 6] = [
        "1250.50", "4800.00", "980.25", "15000.00", "2300.00", "7450.75",
    ];
    let today = Utc::now().date_naive();
    let make = |n: usize, owner, stage, amount| Opportunity {
        notification_id: format!("04l{run_id}{n:07}"),
        record_id: format!("006{run_id}{n:07}"),
        name: format!("Demo {run_id} #{n} - {} licenses", 20 * (n + 1)),
        owner,
        stage,
        amount,
        close_date: today
            .checked_sub_days(Days::new(n as u64))
            .unwrap_or(today)
            .to_string(),
    };
    let open = make(0, OPEN_OWNER, "Prospecting", "990.00");
    let won = (1..=6)
        .map(|n| {
            make(
                n,
                OWNERS[(n - 1) % OWNERS.len()],
                "Closed Won",
                AMOUNTS[n - 1],
            )
        })
        .collect();
    (open, won)
}

/// A SOAP Outbound Message as Salesforce sends it (1–100 notifications).
pub fn outbound_message(org_id: &str, opportunities: &[Opportunity]) -> String {
    let now = Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let mut xml = String::from(concat!(
        r#"<?xml version="1.0" encoding="UTF-8"?>"#,
        "\n",
        r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#,
        "\n <soapenv:Body>\n",
        r#"  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">"#,
        "\n"
    ));
    let org = escape(org_id);
    // Writing to a String cannot fail.
    let _ = write!(
        xml,
        "   <OrganizationId>{org}</OrganizationId>\n   <ActionId>{ACTION_ID}</ActionId>\n   \
         <SessionId xsi:nil=\"true\"/>\n   \
         <EnterpriseUrl>https://demo.my.salesforce.com/services/Soap/c/59.0/{org}</EnterpriseUrl>\n   \
         <PartnerUrl>https://demo.my.salesforce.com/services/Soap/u/59.0/{org}</PartnerUrl>\n"
    );
    for o in opportunities {
        let _ = write!(
            xml,
            "   <Notification>\n    <Id>{}</Id>\n    \
             <sObject xsi:type=\"sf:Opportunity\" xmlns:sf=\"urn:sobject.enterprise.soap.sforce.com\">\n     \
             <sf:Id>{}</sf:Id>\n     <sf:Amount>{}</sf:Amount>\n     <sf:CloseDate>{}</sf:CloseDate>\n     \
             <sf:CreatedDate>{now}</sf:CreatedDate>\n     <sf:LastModifiedDate>{now}</sf:LastModifiedDate>\n     \
             <sf:Name>{}</sf:Name>\n     <sf:OwnerId>{}</sf:OwnerId>\n     <sf:StageName>{}</sf:StageName>\n     \
             <sf:Description xsi:nil=\"true\"/>\n    </sObject>\n   </Notification>\n",
            escape(&o.notification_id),
            escape(&o.record_id),
            escape(o.amount),
            escape(&o.close_date),
            escape(&o.name),
            escape(o.owner),
            escape(o.stage),
        );
    }
    xml.push_str("  </notifications>\n </soapenv:Body>\n</soapenv:Envelope>\n");
    xml
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_tenant_parses_with_an_active_won_workflow() {
        let f = TenantsFile::parse("demo", DEMO_TENANT).unwrap();
        let i = &f.companies[0].integrations[0];
        assert_eq!(i.auto_sync_users, Some(true));
        assert_eq!(i.workflows[0].active, Some(true));
        assert_eq!(i.workflows[0].spec.user_field, "OwnerId");
        assert!(!f.companies[0].teams.is_empty());
    }

    #[test]
    fn ids_are_salesforce_shaped_and_fresh_per_run() {
        let (open, won) = opportunities("ABCDEFGH");
        assert_eq!(won.len(), 6);
        for o in won.iter().chain([&open]) {
            assert_eq!(o.record_id.len(), 18, "{}", o.record_id);
            assert_eq!(o.notification_id.len(), 18);
        }
        let owners: BTreeSet<&str> = won.iter().map(|o| o.owner).collect();
        assert_eq!(owners.len(), 3);
        assert!(!owners.contains(OPEN_OWNER));
        assert_ne!(run_id(), run_id());
    }

    #[test]
    fn the_outbound_message_has_one_notification_per_opportunity() {
        let (_, won) = opportunities("ABCDEFGH");
        let xml = outbound_message("00D000000000DEMOEA", &won[0..3]);
        assert_eq!(xml.matches("<Notification>").count(), 3);
        assert!(xml.contains("<OrganizationId>00D000000000DEMOEA</OrganizationId>"));
        assert!(xml.contains("<sf:StageName>Closed Won</sf:StageName>"));
        assert!(xml.contains(&format!("<sf:OwnerId>{}</sf:OwnerId>", OWNERS[0])));
        assert_eq!(escape("a<b & 'c'"), "a&lt;b &amp; &apos;c&apos;");
    }
}
