use super::*;

const GOOD: &str = r#"
companies:
  - slug: acme
    name: Acme Inc
    integrations:
      - name: salesforce-prod
        crm: salesforce
        crm_account_id: 00D5g000004ABCDEAA
        auto_sync_users: true
        webhook_token: ${CRM_SYNC_TEST_UNSET_VAR:-fallback-token}
        workflows:
          - name: Won opportunities
            active: true
            object_type: Opportunity
            triggers: [created, updated]
            conditions: {all: [{field: StageName, op: eq, value: Closed Won}]}
            user_field: OwnerId
            value_field: Amount
            date_field: CloseDate
            activity_type: deal_won
    teams:
      - name: Sales
"#;

fn error_of(text: &str) -> String {
    TenantsFile::parse("t.yaml", text).unwrap_err().to_string()
}

#[test]
fn a_full_file_parses() {
    let f = TenantsFile::parse("t.yaml", GOOD).unwrap();
    let c = &f.companies[0];
    assert_eq!(&*c.slug, "acme");
    let i = &c.integrations[0];
    assert_eq!(i.crm, Crm::Salesforce);
    assert_eq!(i.webhook_token.as_ref().unwrap().expose(), "fallback-token");
    let w = &i.workflows[0];
    assert_eq!(w.active, Some(true));
    assert_eq!(w.spec.triggers, vec![Trigger::Created, Trigger::Updated]);
    assert_eq!(
        w.spec.conditions.to_json(),
        serde_json::json!({"all": [{"field": "StageName", "op": "eq", "value": "Closed Won"}]})
    );
    assert_eq!(c.teams[0].name.0, "Sales");
    assert!(!format!("{f:?}").contains("fallback-token"));
}

#[test]
fn an_unknown_operator_is_reported_at_its_line() {
    let e = error_of(&GOOD.replace("op: eq", "op: like"));
    assert!(e.starts_with("t.yaml:16:"), "{e}");
    assert!(e.contains("workflows[0].conditions"), "{e}");
    assert!(e.contains("unknown operator `like`"), "{e}");
}

#[test]
fn an_unknown_key_is_reported_at_its_line() {
    let e = error_of(&GOOD.replace(
        "user_field: OwnerId",
        "user_field: OwnerId\n            colour: red",
    ));
    assert!(e.starts_with("t.yaml:18:"), "{e}");
    assert!(e.contains("unknown field `colour`"), "{e}");
    let e = error_of(&GOOD.replace("auto_sync_users: true", "auto_sync_user: true"));
    assert!(e.starts_with("t.yaml:9:"), "{e}");
    assert!(e.contains("companies[0].integrations[0]"), "{e}");
}

#[test]
fn workflow_validation_names_the_entry_and_key() {
    let e = error_of(&GOOD.replace("triggers: [created, updated]", "triggers: []"));
    assert!(e.starts_with("t.yaml:12:"), "{e}");
    assert!(e.contains("workflows[0]: triggers:"), "{e}");
    let e = error_of(&GOOD.replace(
        "triggers: [created, updated]",
        "triggers: [created, renamed]",
    ));
    assert!(e.starts_with("t.yaml:15:"), "{e}");
    assert!(e.contains("renamed"), "{e}");
}

#[test]
fn a_missing_environment_variable_is_named() {
    let e = error_of(&GOOD.replace(":-fallback-token", ""));
    assert!(e.starts_with("t.yaml:10:"), "{e}");
    assert!(e.contains("CRM_SYNC_TEST_UNSET_VAR"), "{e}");
    assert!(e.contains("webhook_token"), "{e}");
}

#[test]
fn bad_crm_and_duplicates_are_errors() {
    let e = error_of(&GOOD.replace("crm: salesforce", "crm: zoho"));
    assert!(e.starts_with("t.yaml:7:"), "{e}");
    assert!(e.contains("zoho"), "{e}");
    let e = error_of(&GOOD.replace(
        "      - name: Sales",
        "      - name: Sales\n      - name: Sales",
    ));
    assert!(
        e.contains("companies[0].teams[1]: duplicate name `Sales`"),
        "{e}"
    );
}

#[test]
fn expansion_rules() {
    let env = |n: &str| (n == "A").then(|| "x".to_owned());
    assert_eq!(expand_env("a${A}b", env).unwrap(), "axb");
    assert_eq!(expand_env("$$A ${B:-d} $5", env).unwrap(), "$A d $5");
    assert!(expand_env("${B}", env).unwrap_err().contains("`B`"));
    assert!(expand_env("${A", env).is_err());
    assert!(expand_env("${1X}", env).is_err());
}
