//! What differs between the CRMs: where a user is read and what the answer looks like.

use serde::Deserialize;

use crate::{Crm, DirectoryUser};

/// Salesforce REST API version used for `sobjects/User`.
pub const SALESFORCE_API_VERSION: &str = "v62.0";
/// Query parameter carrying a Pipedrive API token.
pub(crate) const QUERY_TOKEN: &str = "api_token";

pub(crate) fn default_base_url(crm: Crm) -> Option<&'static str> {
    match crm {
        Crm::HubSpot => Some("https://api.hubapi.com"),
        _ => None,
    }
}

/// Ids as each CRM writes them; anything else never reaches a URL.
pub(crate) fn valid_user_id(crm: Crm, id: &str) -> bool {
    if id.is_empty() || id.len() > 64 {
        return false;
    }
    match crm {
        // 15 or 18 characters, letters and digits.
        Crm::Salesforce => {
            (id.len() == 15 || id.len() == 18) && id.bytes().all(|b| b.is_ascii_alphanumeric())
        }
        Crm::HubSpot | Crm::Pipedrive => id.bytes().all(|b| b.is_ascii_digit()),
        // A GUID.
        Crm::Dynamics => {
            id.len() == 36
                && id.bytes().enumerate().all(|(i, b)| match i {
                    8 | 13 | 18 | 23 => b == b'-',
                    _ => b.is_ascii_hexdigit(),
                })
        }
    }
}

/// The paths (under the API root) to try in order; a 404 moves on to the next.
pub(crate) fn user_requests(crm: Crm, id: &str) -> Vec<String> {
    match crm {
        Crm::Salesforce => vec![format!(
            "/services/data/{SALESFORCE_API_VERSION}/sobjects/User/{id}?fields=Id,Name,Email,IsActive"
        )],
        // Deactivated owners are only found among the archived ones.
        Crm::HubSpot => vec![
            format!("/crm/v3/owners/{id}?idProperty=id&archived=false"),
            format!("/crm/v3/owners/{id}?idProperty=id&archived=true"),
        ],
        Crm::Pipedrive => vec![format!("/api/v1/users/{id}")],
        Crm::Dynamics => vec![format!(
            "/api/data/v9.2/systemusers({id})?$select=fullname,internalemailaddress,isdisabled"
        )],
    }
}

pub(crate) fn decorate(crm: Crm, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match crm {
        Crm::Dynamics => request
            .header("OData-MaxVersion", "4.0")
            .header("OData-Version", "4.0"),
        _ => request,
    }
}

/// The longest name or email kept, in bytes: what ingest takes from a payload.
const MAX_TEXT_BYTES: usize = 1024;

/// A name or email as it can be stored: control characters (NUL, which PostgreSQL refuses, line
/// breaks) dropped, trimmed, and cut to [`MAX_TEXT_BYTES`]; None when nothing is left. A CRM
/// user's odd name must not keep their account unnamed for good.
fn text(value: Option<String>) -> Option<String> {
    let value = value?;
    let mut clean: String = value.chars().filter(|c| !c.is_control()).collect();
    if clean.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES;
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        clean.truncate(end);
    }
    Some(clean.trim().to_owned()).filter(|v| !v.is_empty())
}

pub(crate) fn parse_user(crm: Crm, id: &str, body: &str) -> Result<DirectoryUser, String> {
    match crm {
        Crm::Salesforce => salesforce_user(id, body),
        Crm::HubSpot => hubspot_owner(id, body),
        Crm::Pipedrive => pipedrive_user(id, body),
        Crm::Dynamics => dataverse_user(id, body),
    }
}

fn parse_error(crm: Crm) -> impl Fn(serde_json::Error) -> String {
    move |e| format!("not a {} user: {e}", crm.as_str())
}

/// A Salesforce `User` record.
fn salesforce_user(id: &str, body: &str) -> Result<DirectoryUser, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct User {
        id: Option<String>,
        name: Option<String>,
        email: Option<String>,
        is_active: Option<bool>,
    }
    let u: User = serde_json::from_str(body).map_err(parse_error(Crm::Salesforce))?;
    Ok(DirectoryUser {
        crm_user_id: u.id.unwrap_or_else(|| id.to_owned()),
        name: text(u.name),
        email: text(u.email),
        active: u.is_active,
    })
}

/// A HubSpot owner.
fn hubspot_owner(id: &str, body: &str) -> Result<DirectoryUser, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Owner {
        first_name: Option<String>,
        last_name: Option<String>,
        email: Option<String>,
        archived: Option<bool>,
    }
    let o: Owner = serde_json::from_str(body).map_err(parse_error(Crm::HubSpot))?;
    let name = [o.first_name, o.last_name]
        .into_iter()
        .flatten()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    Ok(DirectoryUser {
        // The owner id is what deals carry (`hubspot_owner_id`); the answer's `userId`
        // is a different id.
        crm_user_id: id.to_owned(),
        name: text(Some(name)),
        email: text(o.email),
        active: o.archived.map(|a| !a),
    })
}

/// A Pipedrive user, in its `success`/`data` envelope.
fn pipedrive_user(id: &str, body: &str) -> Result<DirectoryUser, String> {
    #[derive(Deserialize)]
    struct Envelope {
        success: Option<bool>,
        data: Option<User>,
    }
    #[derive(Deserialize)]
    struct User {
        name: Option<String>,
        email: Option<String>,
        active_flag: Option<bool>,
    }
    let e: Envelope = serde_json::from_str(body).map_err(parse_error(Crm::Pipedrive))?;
    if e.success == Some(false) {
        return Err("Pipedrive answered success: false".into());
    }
    let u = e
        .data
        .ok_or_else(|| "Pipedrive answered without data".to_owned())?;
    Ok(DirectoryUser {
        crm_user_id: id.to_owned(),
        name: text(u.name),
        email: text(u.email),
        active: u.active_flag,
    })
}

/// A Dataverse `systemuser`.
fn dataverse_user(id: &str, body: &str) -> Result<DirectoryUser, String> {
    #[derive(Deserialize)]
    struct SystemUser {
        fullname: Option<String>,
        internalemailaddress: Option<String>,
        isdisabled: Option<bool>,
    }
    let u: SystemUser = serde_json::from_str(body).map_err(parse_error(Crm::Dynamics))?;
    Ok(DirectoryUser {
        crm_user_id: id.to_owned(),
        name: text(u.fullname),
        email: text(u.internalemailaddress),
        active: u.isdisabled.map(|d| !d),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_per_crm() {
        assert!(valid_user_id(Crm::Salesforce, "0055g00000AbCdEAAZ"));
        assert!(valid_user_id(Crm::Salesforce, "0055g00000AbCdE"));
        assert!(!valid_user_id(Crm::Salesforce, "0055g00000AbCdEAAZ/../x"));
        assert!(valid_user_id(Crm::HubSpot, "31093528"));
        assert!(!valid_user_id(Crm::HubSpot, "31093528?x=1"));
        assert!(valid_user_id(
            Crm::Dynamics,
            "7d577253-3ef0-4a0a-bb7f-8335c2596e70"
        ));
        assert!(!valid_user_id(Crm::Dynamics, "7d577253"));
        assert!(!valid_user_id(Crm::Pipedrive, ""));
    }

    #[test]
    fn names_and_emails_are_kept_as_they_can_be_stored() {
        let u = parse_user(
            Crm::Salesforce,
            "0055g00000AbCdEAAZ",
            &serde_json::json!({
                "Name": " Mary\u{0} Major\n",
                "Email": format!("{}@example.com", "é".repeat(600)),
            })
            .to_string(),
        )
        .unwrap();
        assert_eq!(u.name.as_deref(), Some("Mary Major"));
        let email = u.email.unwrap();
        assert!(
            email.len() <= 1024 && email.starts_with('é'),
            "{}",
            email.len()
        );
        let blank = parse_user(Crm::Salesforce, "1", r#"{"Name":"\u0000\t"}"#).unwrap();
        assert_eq!(blank.name, None);
    }

    #[test]
    fn hubspot_owner_names_join_first_and_last() {
        let u = parse_user(
            Crm::HubSpot,
            "41629779",
            r#"{"id":"41629779","email":"jane@example.com","firstName":"Jane","lastName":"Doe","userId":9586504,"archived":false}"#,
        )
        .unwrap();
        assert_eq!(u.name.as_deref(), Some("Jane Doe"));
        assert_eq!(u.crm_user_id, "41629779");
        assert_eq!(u.active, Some(true));
        let only_email = parse_user(
            Crm::HubSpot,
            "1",
            r#"{"email":"a@b.c","firstName":"","lastName":null}"#,
        )
        .unwrap();
        assert_eq!(only_email.name, None);
    }
}
