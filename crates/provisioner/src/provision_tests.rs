use super::*;

const COMPANY: Uuid = Uuid::from_u128(7);
const INTEGRATION: Uuid = Uuid::from_u128(8);

fn waiting(crm_user_id: &str, directory: Option<&str>, payload: Option<&str>) -> Unprovisioned {
    Unprovisioned {
        index: 0,
        company_id: COMPANY,
        locked: Locked {
            integration_id: INTEGRATION,
            crm_user_id: crm_user_id.to_owned(),
            user_id: None,
            display_name: Some(format!("Name of {crm_user_id}")),
            email: payload.map(str::to_owned),
            directory_email: directory.map(str::to_owned),
            held: false,
        },
    }
}

/// What the database would answer for these emails: lowered, and held by `holders`.
fn holders<'a>(
    asked: &[&'a str],
    held_by: &[(&str, Holder)],
) -> HashMap<(Uuid, &'a str), (String, Option<Holder>)> {
    asked
        .iter()
        .map(|e| {
            let lowered = e.to_lowercase();
            let holder = held_by
                .iter()
                .find(|(h, _)| h.to_lowercase() == lowered)
                .map(|(_, h)| h.clone());
            ((COMPANY, *e), (lowered, holder))
        })
        .collect()
}

fn existing(id: u128, from_payload: bool) -> Holder {
    Holder {
        user_id: Uuid::from_u128(id),
        status: "active".to_owned(),
        email_from_payload: from_payload,
    }
}

fn new_id(crm_user_id: &str) -> Uuid {
    derived_id(&["user", &INTEGRATION.to_string(), crm_user_id])
}

#[test]
fn a_directory_email_an_account_was_given_links_to_that_account() {
    let ids = [waiting("u1", Some("Jane@Example.com"), None)];
    let accounts = plan(
        &ids,
        &holders(
            &["Jane@Example.com"],
            &[("jane@example.com", existing(1, false))],
        ),
    );
    assert_eq!(accounts[0].user_id, Uuid::from_u128(1));
    assert!(accounts[0].linked);
    assert_eq!(accounts[0].status, "active");
}

#[test]
fn an_email_only_a_payload_gave_never_links_and_is_not_given_twice() {
    let ids = [waiting("u1", Some("jane@example.com"), None)];
    let accounts = plan(
        &ids,
        &holders(
            &["jane@example.com"],
            &[("jane@example.com", existing(1, true))],
        ),
    );
    assert!(!accounts[0].linked);
    assert_eq!(accounts[0].user_id, new_id("u1"));
    assert_eq!(accounts[0].email, None);
}

#[test]
fn two_new_identities_with_one_directory_email_share_the_first_ones_new_account() {
    let ids = [
        waiting("u1", Some("jane@example.com"), None),
        waiting("u2", Some("JANE@example.com"), None),
    ];
    let accounts = plan(
        &ids,
        &holders(&["jane@example.com", "JANE@example.com"], &[]),
    );
    assert!(!accounts[0].linked);
    assert_eq!(accounts[0].email.as_deref(), Some("jane@example.com"));
    assert!(!accounts[0].email_from_payload);
    assert!(
        accounts[1].linked,
        "the second links to the account just made"
    );
    assert_eq!(accounts[1].user_id, accounts[0].user_id);
    assert_eq!(accounts[1].status, "pending");
}

#[test]
fn two_new_identities_with_one_payload_email_get_two_accounts_and_only_the_first_the_email() {
    let ids = [
        waiting("u1", None, Some("bob@example.com")),
        waiting("u2", None, Some("Bob@example.com")),
    ];
    let accounts = plan(&ids, &holders(&["bob@example.com", "Bob@example.com"], &[]));
    assert_eq!(accounts[0].email.as_deref(), Some("bob@example.com"));
    assert!(accounts[0].email_from_payload);
    assert!(!accounts[1].linked);
    assert_eq!(accounts[1].user_id, new_id("u2"));
    assert_eq!(accounts[1].email, None);
}

#[test]
fn the_directory_email_wins_over_the_payloads_and_blanks_are_no_email() {
    let mut blank = waiting("u2", Some("  "), Some(""));
    blank.locked.display_name = Some(" ".to_owned());
    let ids = [
        waiting("u1", Some("dir@example.com"), Some("payload@example.com")),
        blank,
    ];
    let accounts = plan(
        &ids,
        &holders(&["dir@example.com", "payload@example.com"], &[]),
    );
    assert_eq!(accounts[0].email.as_deref(), Some("dir@example.com"));
    assert!(!accounts[0].email_from_payload);
    assert_eq!(accounts[1].email, None);
    assert_eq!(
        accounts[1].display_name, "u2",
        "a blank name falls back to the CRM id"
    );
}

#[test]
fn one_email_in_two_companies_is_each_companys_own() {
    let mut other = waiting("u2", Some("jane@example.com"), None);
    other.company_id = Uuid::from_u128(70);
    let ids = [waiting("u1", Some("jane@example.com"), None), other];
    let mut asked = holders(&["jane@example.com"], &[]);
    asked.insert(
        (Uuid::from_u128(70), "jane@example.com"),
        ("jane@example.com".to_owned(), None),
    );
    let accounts = plan(&ids, &asked);
    assert!(accounts.iter().all(|a| !a.linked), "{accounts:?}");
    assert_ne!(accounts[0].user_id, accounts[1].user_id);
    assert!(
        accounts
            .iter()
            .all(|a| a.email.as_deref() == Some("jane@example.com")),
        "each company's account gets the address: {accounts:?}"
    );
}
