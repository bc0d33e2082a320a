//! `crm-sync trail <integration> <record id>` (a module of the cli suite): a record's story as
//! the evaluator recorded it, with the failing condition in words and the record's dead letters.

use std::time::Duration;

use crm_sync_e2e::events::{send, won_deal};
use crm_sync_e2e::{Tenant, TestEnv, eventually};
use crm_sync_proto::v1::field_value::Kind;
use crm_sync_proto::v1::{CrmUser, FieldValue};
use crm_sync_store::trail::{self, NewDeadLetter};

use super::{assert_success, crm_sync, text};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn trail_prints_why_a_record_did_not_count_and_its_dead_letters() {
    let env = TestEnv::new("cli-trail").await;
    let tenant = Tenant::create(&env.pool, "cli-trail", false, true).await;
    let _evaluator = env
        .start_service("workflow-evaluator", "workflow-evaluator", &[])
        .await;
    let owner = CrmUser {
        crm_user_id: "005CLI".into(),
        ..CrmUser::default()
    };
    let mut event = won_deal(&tenant, "006CLITRAIL", owner);
    event.fields.insert(
        "StageName".into(),
        FieldValue {
            kind: Some(Kind::Text("Negotiation/Review".into())),
        },
    );
    event.source_delivery_id = "04lCLI1".into();
    send(&env, &event).await;
    eventually("the event in the trail", WAIT, || async {
        let rows = trail::record_events(
            &env.pool,
            tenant.company_id,
            tenant.integration_id,
            "006CLITRAIL",
            10,
        )
        .await
        .unwrap();
        (!rows.is_empty()).then_some(())
    })
    .await;
    trail::record_dead_letters(
        &env.pool,
        &[NewDeadLetter {
            integration_id: tenant.integration_id,
            object_type: "Opportunity".into(),
            record_id: "006CLITRAIL".into(),
            event_id: None,
            service: "provisioner".into(),
            topic: env.topics.matches.clone(),
            partition: 0,
            offset: 41,
            reason: "database_refused".into(),
            detail: "SQLSTATE 22008: timestamp out of range".into(),
        }],
    )
    .await
    .unwrap();

    let integration = tenant.integration_id.to_string();
    let out = crm_sync(&env, &["trail", &integration, "006CLITRAIL"], &[], None).await;
    assert_success("crm-sync trail", &out);
    let story = text(&out.stdout);
    for expected in [
        "Record 006CLITRAIL of salesforce",
        "Opportunity created via generic webhook (event ",
        "delivery 04lCLI1): no match",
        "Won opportunities: not counted (conditions)",
        "- StageName is \"Negotiation/Review\"; the condition wants eq \"Closed Won\"",
        "Dead letters:",
        "database_refused: SQLSTATE 22008: timestamp out of range",
    ] {
        assert!(story.contains(expected), "no {expected:?} in:\n{story}");
    }

    // A record the trail does not know says so; an unknown integration is an error naming it.
    let out = crm_sync(&env, &["trail", &integration, "006NOPE"], &[], None).await;
    assert_success("crm-sync trail of an unknown record", &out);
    assert!(
        text(&out.stdout).contains("Nothing recorded for this record"),
        "{}",
        text(&out.stdout)
    );
    let out = crm_sync(
        &env,
        &["trail", "no-such-integration", "006CLITRAIL"],
        &[],
        None,
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no integration with id or name \"no-such-integration\""),
        "{}",
        text(&out.stderr)
    );
}
