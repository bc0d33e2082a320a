//! Who may call what: every route's authentication, authorization and tenant isolation, driven
//! by the OpenAPI document (so a new route cannot slip through), and tokens made on the command line.

use super::*;

/// Every `$ref` in the document resolves, and every operation documents its answers.
fn assert_document_is_complete(doc: &Value) {
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected ref {r}"));
        assert!(schemas.contains_key(name), "dangling $ref {r}");
    }
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} documents no success"
            );
            assert!(
                responses.contains_key("401"),
                "{method} {path} does not document 401"
            );
            let declared: HashSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            for segment in path.split('/').filter(|s| s.starts_with('{')) {
                let name = segment.trim_matches(|c| c == '{' || c == '}');
                assert!(
                    declared.contains(name),
                    "{method} {path} does not declare path parameter {name}"
                );
            }
            if path.starts_with("/admin/v1/companies/") {
                assert!(
                    responses.contains_key("404"),
                    "{method} {path} does not document 404"
                );
                if method != "get" {
                    assert!(
                        responses.contains_key("403"),
                        "{method} {path} does not document 403"
                    );
                    assert!(
                        responses.contains_key("422"),
                        "{method} {path} does not document 422"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn every_route_refuses_missing_tokens_viewer_writes_and_foreign_companies() {
    let env = TestEnv::new("admin-routes").await;
    let ours = company(&env, "ours").await;
    let theirs = company(&env, "theirs").await;
    let admin = token(&env, ours, "admin").await;
    let viewer = token(&env, ours, "viewer").await;
    let api = start_admin_api(&env).await;

    let doc = AdminClient::new(&api, None)
        .get("/openapi.json")
        .await
        .expect(200);
    assert_document_is_complete(&doc);

    let anonymous = AdminClient::new(&api, None);
    let forged = AdminClient::new(
        &api,
        Some(&format!(
            "csa_{}_{}",
            Uuid::new_v4().simple(),
            "0".repeat(64)
        )),
    );
    let tampered = AdminClient::new(&api, Some(&format!("{}x", &admin[..admin.len() - 1])));
    let as_admin = AdminClient::new(&api, Some(&admin));
    let as_viewer = AdminClient::new(&api, Some(&viewer));
    let mut checked = 0;
    for (template, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            let fill = |company_id: Uuid| {
                template
                    .split('/')
                    .map(|s| match s {
                        "{company_id}" => company_id.to_string(),
                        s if s.starts_with('{') => Uuid::new_v4().to_string(),
                        s => s.to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join("/")
            };
            let body = (method != "GET").then(|| json!({}));
            let own = fill(ours);
            for (who, client) in [
                ("no token", &anonymous),
                ("a forged token", &forged),
                ("a tampered token", &tampered),
            ] {
                let a = client.call(&method, &own, body.clone()).await;
                assert_eq!(a.status, 401, "{method} {own} with {who}: {}", a.body);
                assert_eq!(a.json()["error"], "unauthorized");
            }
            if !template.starts_with("/admin/v1/companies/{company_id}") {
                assert_eq!(
                    template, "/admin/v1/session",
                    "a route outside the company scope"
                );
                continue;
            }
            let foreign = fill(theirs);
            for client in [&as_admin, &as_viewer] {
                let a = client.call(&method, &foreign, body.clone()).await;
                assert_eq!(
                    a.status, 404,
                    "{method} {foreign} on another company: {}",
                    a.body
                );
                assert_eq!(a.json()["error"], "not_found");
            }
            if method != "GET" {
                let a = as_viewer.call(&method, &own, body.clone()).await;
                assert_eq!(a.status, 403, "{method} {own} as a viewer: {}", a.body);
                assert_eq!(a.json()["error"], "forbidden");
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 30,
        "only {checked} company routes in the document"
    );

    // A company that does not exist at all looks like another company's.
    as_admin
        .get(&company_path(Uuid::new_v4(), "/teams"))
        .await
        .expect(404);
    as_admin
        .get("/admin/v1/companies/not-a-uuid/teams")
        .await
        .expect(404);
    let session = as_viewer.get("/admin/v1/session").await.expect(200);
    assert_eq!(session["company_id"], ours.to_string());
    assert_eq!(session["role"], "viewer");
}

#[tokio::test]
async fn crm_sync_admin_create_token_prints_a_working_token_once() {
    let env = TestEnv::new("admin-cli").await;
    let acme = company(&env, "acme").await;
    let api = start_admin_api(&env).await;
    let run = |args: &[&str]| {
        std::process::Command::new(crm_sync_e2e::binary_path("crm-sync"))
            .args(args)
            .env("CRM_SYNC__DATABASE__URL", &env.database_url)
            .env_remove("CRM_SYNC_CONFIG")
            .output()
            .unwrap()
    };
    let out = run(&[
        "admin",
        "create-token",
        "--company",
        "acme",
        "--role",
        "viewer",
        "--label",
        "wallboard",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bearer = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(bearer.starts_with("csa_"), "{bearer}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("only this once"));
    let session = AdminClient::new(&api, Some(&bearer))
        .get("/admin/v1/session")
        .await
        .expect(200);
    assert_eq!(session["company_id"], acme.to_string());
    assert_eq!(session["role"], "viewer");
    // Only the hash is stored.
    let (stored,): (Vec<u8>,) = sqlx::query_as("SELECT token_sha256 FROM admin_tokens")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 32);
    assert!(!String::from_utf8_lossy(&stored).contains(&bearer[40..]));

    let by_id = run(&[
        "admin",
        "create-token",
        "--company",
        &acme.to_string(),
        "--role",
        "admin",
    ]);
    assert!(by_id.status.success());
    let unknown = run(&[
        "admin",
        "create-token",
        "--company",
        "nope",
        "--role",
        "admin",
    ]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no company"));
    let bad_role = run(&[
        "admin",
        "create-token",
        "--company",
        "acme",
        "--role",
        "root",
    ]);
    assert!(!bad_role.status.success());

    // SIGTERM: admin-api drains and exits cleanly.
    let status = api.terminate().await;
    assert!(status.success(), "admin-api exited with {status}");
}
