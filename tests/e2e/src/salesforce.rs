//! Salesforce Outbound Messages as Salesforce sends them.

pub struct Notification<'a> {
    pub id: &'a str,
    pub object: &'a str,
    pub fields: Vec<(&'a str, &'a str)>,
}

/// A won opportunity owned by `owner`.
pub fn won_opportunity<'a>(
    notification_id: &'a str,
    record_id: &'a str,
    owner: &'a str,
    amount: &'a str,
) -> Notification<'a> {
    opportunity(notification_id, record_id, owner, amount, "Closed Won")
}

pub fn opportunity<'a>(
    notification_id: &'a str,
    record_id: &'a str,
    owner: &'a str,
    amount: &'a str,
    stage: &'a str,
) -> Notification<'a> {
    Notification {
        id: notification_id,
        object: "Opportunity",
        fields: vec![
            ("Id", record_id),
            ("Amount", amount),
            ("CloseDate", "2026-11-20"),
            ("CreatedDate", "2026-11-01T09:00:00.000Z"),
            ("LastModifiedDate", "2026-11-20T15:04:05.000Z"),
            ("Name", "Acme - 200 licenses"),
            ("OwnerId", owner),
            ("StageName", stage),
        ],
    }
}

pub fn outbound_message(organization_id: &str, notifications: &[Notification<'_>]) -> String {
    let mut xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{organization_id}</OrganizationId>
   <ActionId>04k5g000000XYZAAA2</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/59.0/{organization_id}</EnterpriseUrl>
   <PartnerUrl>https://example.my.salesforce.com/services/Soap/u/59.0/{organization_id}</PartnerUrl>
"#
    );
    for n in notifications {
        xml.push_str(&format!(
            "   <Notification>\n    <Id>{}</Id>\n    <sObject xsi:type=\"sf:{}\" xmlns:sf=\"urn:sobject.enterprise.soap.sforce.com\">\n",
            n.id, n.object
        ));
        for (k, v) in &n.fields {
            xml.push_str(&format!("     <sf:{k}>{v}</sf:{k}>\n"));
        }
        xml.push_str("    </sObject>\n   </Notification>\n");
    }
    xml.push_str("  </notifications>\n </soapenv:Body>\n</soapenv:Envelope>\n");
    xml
}
