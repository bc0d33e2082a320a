//! A tenant as the suites need one, and Salesforce Outbound Messages posted to ingest.

use sqlx::PgPool;

use crate::Service;

/// A company with one Salesforce integration and a "Won opportunities" workflow.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub company_id: uuid::Uuid,
    pub integration_id: uuid::Uuid,
    pub workflow_id: uuid::Uuid,
    pub organization_id: String,
    pub token: String,
}

impl Tenant {
    pub async fn create(
        pool: &PgPool,
        slug: &str,
        auto_sync_users: bool,
        workflow_active: bool,
    ) -> Tenant {
        use crm_sync_store::tenants;
        let company_id = tenants::upsert_company(pool, None, slug, &format!("{slug} Inc"))
            .await
            .unwrap();
        let organization_id =
            format!("00D{}", &uuid::Uuid::new_v4().simple().to_string()[..15]).to_uppercase();
        let token = crm_sync_store::secrets::new_token();
        let integration_id = tenants::upsert_integration(
            pool,
            &tenants::IntegrationInput {
                id: None,
                company_id,
                name: "salesforce".into(),
                crm: "salesforce".into(),
                crm_account_id: organization_id.clone(),
                auto_sync_users,
                webhook_token: Some(token.clone()),
            },
        )
        .await
        .unwrap();
        let workflow_id = upsert_workflow(
            pool,
            company_id,
            integration_id,
            None,
            serde_json::json!({
                "name": "Won opportunities",
                "object_type": "Opportunity",
                "triggers": ["created", "updated"],
                "conditions": {"all": [{"field": "StageName", "op": "eq", "value": "Closed Won"}]},
                "user_field": "OwnerId",
                "value_field": "Amount",
                "date_field": "CloseDate",
                "activity_type": "deal_won"
            }),
            workflow_active,
        )
        .await;
        Tenant {
            company_id,
            integration_id,
            workflow_id,
            organization_id,
            token,
        }
    }

    pub fn outbound_message_path(&self) -> String {
        format!(
            "/v1/integrations/{}/salesforce/outbound-messages?token={}",
            self.integration_id, self.token
        )
    }
}

/// Stores a workflow of the integration from its JSON spec, as the tenants file and admin-api
/// take it (`id`: replaces that workflow); returns its id.
pub async fn upsert_workflow(
    pool: &PgPool,
    company_id: uuid::Uuid,
    integration_id: uuid::Uuid,
    id: Option<uuid::Uuid>,
    spec: serde_json::Value,
    active: bool,
) -> uuid::Uuid {
    let spec: crm_sync_workflow::WorkflowSpec = serde_json::from_value(spec).unwrap();
    crm_sync_store::tenants::upsert_workflow(pool, id, company_id, integration_id, &spec, active)
        .await
        .unwrap()
}

/// Posts a Salesforce Outbound Message to ingest; returns status and body.
pub async fn post_outbound_message(
    ingest: &Service,
    tenant: &Tenant,
    xml: String,
) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(ingest.url(&tenant.outbound_message_path()))
        .header("content-type", "text/xml; charset=utf-8")
        .header("SOAPAction", "\"\"")
        .body(xml)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}
