use crm_sync_workflow::{Condition, Trigger, WorkflowSpec};
use uuid::Uuid;

use super::*;

fn workflow(object: &str, conditions: serde_json::Value, value: Option<&str>) -> StoredWorkflow {
    StoredWorkflow {
        id: Uuid::new_v4(),
        company_id: Uuid::new_v4(),
        integration_id: Uuid::new_v4(),
        active: true,
        spec: WorkflowSpec {
            name: "w".into(),
            object_type: object.into(),
            triggers: vec![Trigger::parse("updated").unwrap()],
            conditions: Condition::from_json(&conditions).unwrap(),
            user_field: "OwnerId".into(),
            value_field: value.map(str::to_owned),
            date_field: None,
            activity_type: "deal".into(),
        },
    }
}

#[test]
fn scopes_are_the_workflows_objects_with_every_field_they_read() {
    let workflows = [
        workflow(
            "Opportunity",
            serde_json::json!({"field": "StageName", "op": "eq", "value": "Closed Won"}),
            Some("Amount"),
        ),
        workflow(
            "opportunity",
            serde_json::json!({"field": "Type", "op": "eq", "value": "New"}),
            None,
        ),
        workflow(
            "Lead",
            serde_json::json!({"field": "Owner.Email", "op": "eq", "value": "x"}),
            None,
        ),
    ];
    let scopes = scopes(&workflows, &[]);
    assert_eq!(scopes.len(), 2, "{scopes:?}");
    assert_eq!(scopes[0].object, "Lead");
    assert_eq!(scopes[0].fields, ["OwnerId"], "a dotted path is left out");
    assert_eq!(scopes[1].object, "Opportunity");
    let mut fields = scopes[1].fields.clone();
    fields.sort();
    assert_eq!(fields, ["Amount", "OwnerId", "StageName", "Type"]);
}

#[test]
fn a_backfill_of_named_objects_pulls_only_those() {
    let workflows = [
        workflow(
            "Opportunity",
            serde_json::json!({"all": []}),
            Some("Amount"),
        ),
        workflow("Lead", serde_json::json!({"all": []}), None),
    ];
    let scopes = scopes(&workflows, &["opportunity".to_owned(), "Case".to_owned()]);
    let objects: Vec<&str> = scopes.iter().map(|s| s.object.as_str()).collect();
    assert_eq!(objects, ["Case", "opportunity"]);
    assert!(scopes[0].fields.is_empty());
    assert!(scopes[1].fields.contains(&"Amount".to_owned()));
}

#[test]
fn only_a_schedule_starts_change_tracking() {
    let workflows = [workflow(
        "opportunity",
        serde_json::json!({"all": []}),
        None,
    )];
    let named = ["opportunity".to_owned()];
    let backfill = job_scopes(JobKind::Backfill, &workflows, &named);
    assert_eq!(backfill.len(), 1);
    assert!(
        !backfill[0].establish_tracking,
        "a backfill has no next run to read it"
    );
    let schedule = job_scopes(JobKind::Reconciliation, &workflows, &named);
    assert_eq!(schedule.len(), 1);
    assert!(schedule[0].establish_tracking);
}
