//! CRM identities and integrations: an unmapped identity waits for an admin, and deleting an
//! integration retracts its activities.

use super::*;

fn outcome(tenant: &Tenant, record_id: &str, crm_user_id: &str) -> WorkflowOutcome {
    let owner = CrmUser {
        crm_user_id: crm_user_id.into(),
        ..CrmUser::default()
    };
    crm_sync_e2e::events::matched_outcome(tenant, record_id, owner)
}

async fn send_outcome(env: &TestEnv, o: &WorkflowOutcome) {
    crm_sync_e2e::events::send_outcome(env, o).await;
}

#[tokio::test]
async fn an_unmapped_identity_waits_unmapped_even_with_auto_sync_on() {
    let env = TestEnv::new("people-unmap").await;
    // Auto-sync on: without the unmapping, the next event would re-create an account.
    let tenant = Tenant::create(&env.pool, "unmap", true, true).await;
    let other = Tenant::create(&env.pool, "unmap-other", false, true).await;
    let admin = token(&env, tenant.company_id, "admin").await;
    let viewer = token(&env, tenant.company_id, "viewer").await;
    let api = start_admin_api(&env).await;
    let _provisioner = env.start_service("provisioner", "provisioner", &[]).await;
    let c = AdminClient::new(&api, Some(&admin));
    let p = |rest: &str| company_path(tenant.company_id, rest);

    // The provisioner creates Dan's account from his first deal.
    send_outcome(&env, &outcome(&tenant, "006FIRST", "005DAN")).await;
    let dan = eventually("Dan's account", WAIT, || async {
        let users = c.get(&p("/users")).await.expect(200);
        users["items"].as_array().unwrap().first().cloned()
    })
    .await;
    let dan_id = dan["id"].as_str().unwrap().to_owned();
    let stranger = seed_pending_user(&env, &other, "Stranger", "005STRANGER", &["1"]).await;

    let unmap = p(&format!(
        "/users/{dan_id}/crm-identities/{}/005DAN",
        tenant.integration_id
    ));
    AdminClient::new(&api, Some(&viewer))
        .delete(&unmap)
        .await
        .expect(403);
    c.delete(&p(&format!(
        "/users/{stranger}/crm-identities/{}/005STRANGER",
        other.integration_id
    )))
    .await
    .expect(404);
    c.delete(&p(&format!(
        "/users/{dan_id}/crm-identities/{}/005NOBODY",
        tenant.integration_id
    )))
    .await
    .expect(404);
    let unmapped = c.delete(&unmap).await.expect(200);
    assert_eq!(unmapped["detached_activities"], 1);
    assert_eq!(unmapped["user"]["crm_identities"], json!([]));
    assert_eq!(
        c.get(&p("/activities?unmapped=true")).await.expect(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A later deal of the same CRM user waits unmapped: no second account.
    send_outcome(&env, &outcome(&tenant, "006LATER", "005DAN")).await;
    eventually("the later deal recorded unmapped", WAIT, || async {
        let waiting = c.get(&p("/activities?unmapped=true")).await.expect(200);
        (waiting["items"].as_array().unwrap().len() == 2).then_some(())
    })
    .await;
    let users = c.get(&p("/users")).await.expect(200);
    assert_eq!(users["items"].as_array().unwrap().len(), 1, "{users}");
    let waiting = c.get(&p("/crm-identities?mapped=false")).await.expect(200);
    assert_eq!(waiting["items"][0]["crm_user_id"], "005DAN");
    assert_eq!(waiting["items"][0]["unmapped_activities"], 2);

    // Mapping it again by hand attaches both.
    let mapped = c
        .post(
            &p(&format!("/users/{dan_id}/crm-identities")),
            json!({"integration_id": tenant.integration_id, "crm_user_id": "005DAN"}),
        )
        .await
        .expect(200);
    assert_eq!(mapped["attached_activities"], 2);
    let audit = audit_actions(&c, tenant.company_id).await;
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "user.crm_identity_unmapped"
                && e["target_id"] == dan_id.as_str()),
        "{audit:?}"
    );
    eventually("Dan announced without the identity", WAIT, || async {
        let changes = user_changes(&env, &dan_id).await;
        changes
            .iter()
            .any(|u| u.crm_user_id.is_empty())
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_an_integration_needs_its_name_and_retracts_its_activities() {
    let env = TestEnv::new("integration-delete").await;
    let w = admin_world(&env, ("delete", "delete-other"), false).await;
    let (tenant, other, c) = (&w.tenant, &w.other, &w.admin);
    let v = &w.viewer(&env).await;
    let p = |rest: &str| company_path(tenant.company_id, rest);

    let erin = seed_pending_user(&env, tenant, "Erin", "005ERIN", &["400", "600"]).await;
    seed_activities(&env, tenant, "005WAITING", None, &["50"], "2026-11-20").await;
    let integration = p(&format!("/integrations/{}", tenant.integration_id));

    let preview = v.get(&format!("{integration}/deletion")).await.expect(200);
    assert_eq!(preview["name"], "salesforce");
    assert_eq!(preview["workflows"], 1);
    assert_eq!(preview["active_workflows"], 1);
    assert_eq!(preview["crm_identities"], 1);
    assert_eq!(preview["recorded_activities"], 2);
    assert_eq!(preview["unmapped_activities"], 1);
    c.get(&company_path(
        tenant.company_id,
        &format!("/integrations/{}/deletion", other.integration_id),
    ))
    .await
    .expect(404);

    v.delete(&format!("{integration}?confirm=salesforce"))
        .await
        .expect(403);
    let unconfirmed = c.delete(&integration).await.expect(409);
    assert_eq!(unconfirmed["field"], "confirm");
    assert!(
        unconfirmed["message"]
            .as_str()
            .unwrap()
            .contains("1 workflows"),
        "{unconfirmed}"
    );
    c.delete(&format!("{integration}?confirm=hubspot"))
        .await
        .invalid("confirm");
    c.delete(&company_path(
        tenant.company_id,
        &format!("/integrations/{}?confirm=salesforce", other.integration_id),
    ))
    .await
    .expect(404);
    c.get(&integration).await.expect(200);

    let gone = c
        .delete(&format!("{integration}?confirm=salesforce"))
        .await
        .expect(200);
    assert_eq!(gone["recorded_activities"], 2);
    c.get(&integration).await.expect(404);
    assert_eq!(
        c.get(&p("/workflows")).await.expect(200)["items"],
        json!([])
    );
    assert_eq!(
        c.get(&p("/activities")).await.expect(200)["items"],
        json!([])
    );
    // The people stay.
    let user = c.get(&p(&format!("/users/{erin}"))).await.expect(200);
    assert_eq!(user["crm_identities"], json!([]));
    // The other company's integration is untouched.
    let theirs: (i64,) = sqlx::query_as("SELECT count(*) FROM workflows WHERE integration_id = $1")
        .bind(other.integration_id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(theirs.0, 1);

    let erin_s = erin.to_string();
    let retracted = eventually("Erin's activities retracted downstream", WAIT, || async {
        let changes = activity_changes(&env, &erin_s).await;
        (changes.len() >= 2).then_some(changes)
    })
    .await;
    assert!(
        retracted
            .iter()
            .all(|a| a.state == ActivityState::Retracted as i32 && !a.visible)
    );
    let audit = audit_actions(c, tenant.company_id).await;
    let entry = audit
        .iter()
        .find(|e| e["action"] == "integration.deleted")
        .expect("delete audited");
    assert_eq!(entry["details"]["name"], "salesforce");
}

/// An admin works through the unmapped CRM users page by page, mapping each page's identities
/// before asking for the next: no identity is skipped because the earlier ones left the list.
#[tokio::test]
async fn unmapped_identities_page_on_while_the_earlier_ones_are_mapped() {
    let env = TestEnv::new("identities-paging").await;
    let w = admin_world(
        &env,
        ("identities-paging", "identities-paging-other"),
        false,
    )
    .await;
    let (tenant, c) = (&w.tenant, &w.admin);
    let p = |rest: &str| company_path(tenant.company_id, rest);
    for (n, crm_user_id) in ["005A", "005B", "005C", "005D", "005E"].iter().enumerate() {
        sqlx::query(
            "INSERT INTO crm_identities (company_id, integration_id, crm_user_id, created_at)
             VALUES ($1, $2, $3, now() - make_interval(mins => 10 - $4))",
        )
        .bind(tenant.company_id)
        .bind(tenant.integration_id)
        .bind(crm_user_id)
        .bind(n as i32)
        .execute(&env.pool)
        .await
        .unwrap();
    }
    let owner = c
        .post(&p("/users"), json!({"display_name": "Owner of all"}))
        .await
        .expect(201);
    let owner_id = owner["id"].as_str().unwrap().to_owned();

    let mut seen = Vec::new();
    let mut query = "/crm-identities?mapped=false&limit=2".to_owned();
    for _ in 0..5 {
        let page = c.get(&p(&query)).await.expect(200);
        for item in page["items"].as_array().unwrap() {
            let crm_user_id = item["crm_user_id"].as_str().unwrap().to_owned();
            c.post(
                &p(&format!("/users/{owner_id}/crm-identities")),
                json!({"integration_id": tenant.integration_id, "crm_user_id": crm_user_id}),
            )
            .await
            .expect(200);
            seen.push(crm_user_id);
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("/crm-identities?mapped=false&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["005A", "005B", "005C", "005D", "005E"]);
    c.get(&p("/crm-identities?cursor=zz"))
        .await
        .invalid("cursor");
}
