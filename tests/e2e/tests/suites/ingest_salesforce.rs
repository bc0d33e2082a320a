//! The `ingest` binary receiving Salesforce Outbound Messages, against the real local stack.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod acknowledgement;
mod refusals;

use std::collections::BTreeMap;
use std::time::Duration;

use crm_sync_e2e::app::Answer;
use crm_sync_e2e::{Record, Service, TestEnv, read_topic, topic_message_count};
use crm_sync_proto::Message as _;
use crm_sync_proto::v1::{ChangeType, CrmEvent, CrmKind, field_value::Kind};
use crm_sync_store::tenants::{self, IntegrationInput};
use uuid::Uuid;

const ORG: &str = "00D5g000004ABCDEAA";
/// Pinned here on purpose: if ingest's namespace changed, redelivered notifications would get new
/// event ids after a deploy and no longer deduplicate.
const EVENT_ID_NAMESPACE: &str = "3f6c9a2e-51d4-4b7a-8e0f-5c1b2d7e9a40";

struct Fixture {
    env: TestEnv,
    integration_id: Uuid,
    /// A HubSpot integration of the same company, with the same token.
    hubspot_integration_id: Uuid,
    token: String,
}

async fn fixture(name: &str) -> Fixture {
    let env = TestEnv::new(name).await;
    let company = tenants::upsert_company(&env.pool, None, "acme", "Acme Inc.")
        .await
        .unwrap();
    let token = crm_sync_store::secrets::new_token();
    let integration = |name: &str, crm: &str| IntegrationInput {
        id: None,
        company_id: company,
        name: name.into(),
        crm: crm.into(),
        crm_account_id: ORG.into(),
        auto_sync_users: false,
        webhook_token: Some(token.clone()),
    };
    let integration_id = tenants::upsert_integration(&env.pool, &integration("sf", "salesforce"))
        .await
        .unwrap();
    let hubspot_integration_id =
        tenants::upsert_integration(&env.pool, &integration("hs", "hubspot"))
            .await
            .unwrap();
    Fixture {
        env,
        integration_id,
        hubspot_integration_id,
        token,
    }
}

fn endpoint(ingest: &Service, integration_id: &str, token: Option<&str>) -> String {
    let path = format!("/v1/integrations/{integration_id}/salesforce/outbound-messages");
    match token {
        Some(token) => ingest.url(&format!("{path}?token={token}")),
        None => ingest.url(&path),
    }
}

/// POSTs an Outbound Message body as Salesforce does (an empty `SOAPAction`).
async fn post(url: &str, content_type: &str, body: String) -> Answer {
    let headers = [("content-type", content_type), ("soapaction", "\"\"")];
    crm_sync_e2e::app::post(url, &headers, body).await
}

/// A notification's sObject: its type and fields (None: `xsi:nil="true"`).
struct Notification<'a> {
    id: &'a str,
    object: &'a str,
    fields: &'a [(&'a str, Option<&'a str>)],
}

fn outbound_message(org: &str, notifications: &[Notification<'_>]) -> String {
    let mut xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{org}</OrganizationId>
   <ActionId>04k5g000000XYZAAA2</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/59.0/00D5g000004ABCD</EnterpriseUrl>
   <PartnerUrl>https://example.my.salesforce.com/services/Soap/u/59.0/00D5g000004ABCD</PartnerUrl>
"#
    );
    for n in notifications {
        xml.push_str(&format!(
            "   <Notification>\n    <Id>{}</Id>\n    <sObject xsi:type=\"sf:{}\" xmlns:sf=\"urn:sobject.enterprise.soap.sforce.com\">\n",
            n.id, n.object
        ));
        for (name, value) in n.fields {
            match value {
                Some(v) => xml.push_str(&format!("     <sf:{name}>{v}</sf:{name}>\n")),
                None => xml.push_str(&format!("     <sf:{name} xsi:nil=\"true\"/>\n")),
            }
        }
        xml.push_str("    </sObject>\n   </Notification>\n");
    }
    xml.push_str("  </notifications>\n </soapenv:Body>\n</soapenv:Envelope>\n");
    xml
}

const OWNER_1: &str = "0055g00000AbCdEAAZ";
const OWNER_2: &str = "0055g00000ZyXwVAAQ";

fn three_notifications() -> Vec<Notification<'static>> {
    vec![
        Notification {
            id: "04l5g00000ABCDEAA1",
            object: "Opportunity",
            fields: &[
                ("Id", Some("0065g00000XyZ12AAB")),
                ("Amount", Some("1250.50")),
                ("CloseDate", Some("2026-11-20")),
                ("CreatedDate", Some("2026-11-01T09:00:00.000Z")),
                ("LastModifiedDate", Some("2026-11-20T15:04:05.000Z")),
                ("Name", Some("Smith &amp; Sons - 200 licenses")),
                ("OwnerId", Some(OWNER_1)),
                ("StageName", Some("Closed Won")),
                ("Description", None),
            ],
        },
        Notification {
            id: "04l5g00000ABCDEAA2",
            object: "Opportunity",
            fields: &[
                ("Id", Some("0065g00000XyZ13AAB")),
                ("Amount", Some("99.00")),
                ("CreatedDate", Some("2026-11-21T08:00:00.000Z")),
                ("LastModifiedDate", Some("2026-11-21T08:00:00.000Z")),
                ("OwnerId", Some(OWNER_2)),
                ("StageName", Some("Prospecting")),
            ],
        },
        Notification {
            id: "04l5g00000ABCDEAA3",
            object: "Invoice__c",
            fields: &[
                ("Id", Some("a0B5g00000Inv01AAA")),
                ("Total__c", Some("10.00")),
                ("LastModifiedDate", Some("2026-11-22T10:30:00.000+0000")),
                ("OwnerId", Some(OWNER_1)),
            ],
        },
    ]
}

fn decode(record: &Record) -> CrmEvent {
    CrmEvent::decode(record.payload.as_slice()).unwrap()
}

fn text(event: &CrmEvent, field: &str) -> Option<Kind> {
    event.fields.get(field).and_then(|v| v.kind.clone())
}

fn seconds(rfc3339: &str) -> i64 {
    // The test kit has no date library: these instants are spelled out in Unix seconds.
    match rfc3339 {
        "2026-11-20T15:04:05Z" => 1_795_187_045,
        "2026-11-21T08:00:00Z" => 1_795_248_000,
        "2026-11-22T10:30:00Z" => 1_795_343_400,
        other => panic!("no Unix time spelled out for {other}"),
    }
}

/// The value of the Prometheus sample of `name` whose labels include all of `labels`.
fn metric_value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|l| line.contains(l)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
