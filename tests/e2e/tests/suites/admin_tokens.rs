//! Admin tokens expire and can be revoked (through the API by a company admin, or with
//! `crm-sync admin revoke-token`), both audited; an expired or revoked token answers 401.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::admin_support;

use crm_sync_e2e::app::AdminClient;

use admin_support::{company, company_path, start_admin_api};
use crm_sync_e2e::TestEnv;
use crm_sync_store::admin::tokens::{self, CreatedToken, Role};
use uuid::Uuid;

async fn create(env: &TestEnv, company_id: Uuid, role: Role, days: u32) -> CreatedToken {
    tokens::create(&env.pool, company_id, role, Some("e2e"), days)
        .await
        .unwrap()
}

fn cli(env: &TestEnv, args: &[&str]) -> std::process::Output {
    std::process::Command::new(crm_sync_e2e::binary_path("crm-sync"))
        .args(args)
        .env("CRM_SYNC__DATABASE__URL", &env.database_url)
        .env_remove("CRM_SYNC_CONFIG")
        .output()
        .unwrap()
}

#[tokio::test]
async fn tokens_expire_and_are_revoked_through_the_api_and_the_cli_audited() {
    let env = TestEnv::new("admin-tokens").await;
    let acme = company(&env, "acme").await;
    let globex = company(&env, "globex").await;
    let admin = create(&env, acme, Role::Admin, tokens::DEFAULT_LIFETIME_DAYS).await;
    let viewer = create(&env, acme, Role::Viewer, 1).await;
    let laptop = create(&env, acme, Role::Admin, 30).await;
    let theirs = create(&env, globex, Role::Admin, 30).await;
    let api = start_admin_api(&env).await;
    let c = AdminClient::new(&api, Some(&admin.bearer));
    let v = AdminClient::new(&api, Some(&viewer.bearer));
    let p = |rest: &str| company_path(acme, rest);

    // Listed without secrets, with their expiry; admin tokens only; another company's is 404.
    let listed = c.all(&p("/admin-tokens"), 2).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    let text = serde_json::to_string(&listed).unwrap();
    for created in [&admin, &viewer, &laptop] {
        let secret = created.bearer.rsplit('_').next().unwrap();
        assert!(!text.contains(secret), "a secret is listed: {text}");
    }
    let viewer_row = listed
        .iter()
        .find(|t| t["id"] == viewer.token.id.to_string())
        .unwrap();
    assert_eq!(viewer_row["role"], "viewer");
    assert_eq!(viewer_row["live"], true);
    // Nor does the audit log show a viewer who holds access; an admin sees the tokens made.
    let tokens_made = |log: &[serde_json::Value]| {
        log.iter()
            .filter(|e| e["action"] == "admin_token.created")
            .count()
    };
    assert_eq!(tokens_made(&c.all(&p("/audit-log"), 200).await), 3);
    let viewers_log = v.all(&p("/audit-log"), 200).await;
    assert!(
        viewers_log
            .iter()
            .all(|e| e["target_type"] != "admin_token"),
        "{viewers_log:?}"
    );
    let expires: chrono::DateTime<chrono::Utc> =
        viewer_row["expires_at"].as_str().unwrap().parse().unwrap();
    let in_a_day = chrono::Utc::now() + chrono::Duration::days(1);
    assert!((expires - in_a_day).num_minutes().abs() < 5, "{expires}");
    v.get(&p("/admin-tokens")).await.expect(403);
    c.get(&company_path(globex, "/admin-tokens"))
        .await
        .expect(404);
    c.post(
        &p(&format!("/admin-tokens/{}/revoke", theirs.token.id)),
        serde_json::json!({}),
    )
    .await
    .expect(404);

    // Revoked through the API: 401 at once, audited with the revoking token as actor.
    v.get("/admin/v1/session").await.expect(200);
    let revoked = c
        .post(
            &p(&format!("/admin-tokens/{}/revoke", viewer.token.id)),
            serde_json::json!({}),
        )
        .await
        .expect(200);
    assert_eq!(revoked["live"], false);
    assert!(revoked["revoked_at"].is_string());
    let refused = v.get("/admin/v1/session").await.expect(401);
    assert_eq!(refused["error"], "unauthorized");

    // Revoked with the CLI.
    let laptop_client = AdminClient::new(&api, Some(&laptop.bearer));
    laptop_client.get("/admin/v1/session").await.expect(200);
    let out = cli(
        &env,
        &[
            "admin",
            "revoke-token",
            "--id",
            &laptop.token.id.to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    laptop_client.get("/admin/v1/session").await.expect(401);
    let unknown = cli(
        &env,
        &["admin", "revoke-token", "--id", &Uuid::new_v4().to_string()],
    );
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no admin token with id"));

    let audit = c.all(&p("/audit-log"), 200).await;
    let revocations: Vec<(String, String)> = audit
        .iter()
        .filter(|e| e["action"] == "admin_token.revoked")
        .map(|e| {
            (
                e["target_id"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(revocations.len(), 2, "{audit:?}");
    assert!(revocations.contains(&(laptop.token.id.to_string(), "cli".to_owned())));
    let (target, actor) = revocations
        .iter()
        .find(|(target, _)| *target == viewer.token.id.to_string())
        .unwrap();
    assert_eq!(target, &viewer.token.id.to_string());
    assert!(actor.contains(&admin.token.id.to_string()), "{actor}");

    // Expired: refused like an unknown token.
    sqlx::query("UPDATE admin_tokens SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(admin.token.id)
        .execute(&env.pool)
        .await
        .unwrap();
    c.get("/admin/v1/session").await.expect(401);

    // The CLI sets the lifetime at creation.
    let out = cli(
        &env,
        &[
            "admin",
            "create-token",
            "--company",
            "acme",
            "--role",
            "viewer",
            "--expires-in-days",
            "7",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("valid for 7 days"));
    let too_long = cli(
        &env,
        &[
            "admin",
            "create-token",
            "--company",
            "acme",
            "--role",
            "viewer",
            "--expires-in-days",
            "9999",
        ],
    );
    assert!(!too_long.status.success());
}

#[tokio::test]
async fn viewers_read_who_changed_what_without_the_admin_tokens_labels() {
    let env = TestEnv::new("admin-audit-actor").await;
    let acme = company(&env, "audit-actor").await;
    // Labels name whoever holds the token: for admins, who may list the tokens, to see.
    let label = "Alice's laptop (audit-actor)";
    let admin = tokens::create(&env.pool, acme, Role::Admin, Some(label), 30)
        .await
        .unwrap();
    let viewer = create(&env, acme, Role::Viewer, 1).await;
    let api = start_admin_api(&env).await;
    let c = AdminClient::new(&api, Some(&admin.bearer));
    let v = AdminClient::new(&api, Some(&viewer.bearer));
    let p = |rest: &str| company_path(acme, rest);
    c.post(&p("/teams"), serde_json::json!({"name": "Audit actors"}))
        .await
        .expect(201);
    let team_created = |log: &[serde_json::Value]| {
        log.iter()
            .find(|e| e["action"] == "team.created")
            .cloned()
            .unwrap()
    };

    // The admin reads which token made the change, by its id and label.
    let admins_entry = team_created(&c.all(&p("/audit-log"), 200).await);
    let actor = admins_entry["actor"].as_str().unwrap();
    assert!(actor.contains(label), "{admins_entry}");
    assert!(
        actor.contains(&admin.token.id.to_string()),
        "{admins_entry}"
    );

    // The viewer reads that an admin token made it, and nothing of the token's label.
    let viewers_log = v.all(&p("/audit-log"), 200).await;
    let viewers_entry = team_created(&viewers_log);
    assert_eq!(viewers_entry["actor"], "admin token", "{viewers_entry}");
    assert_eq!(viewers_entry["details"], admins_entry["details"]);
    let text = serde_json::to_string(&viewers_log).unwrap();
    assert!(
        !text.contains("Alice"),
        "a token's label shows to a viewer: {text}"
    );
}
