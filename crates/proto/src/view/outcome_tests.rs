use prost::Message;

use super::*;
use crate::v1::{CrmUser, WorkflowOutcome};

fn owned(o: &OutcomeRef<'_>) -> WorkflowOutcome {
    let mut outcome = WorkflowOutcome {
        outcome_id: o.outcome_id.to_owned(),
        event_id: o.event_id.to_owned(),
        company_id: o.company_id.to_owned(),
        integration_id: o.integration_id.to_owned(),
        workflow_id: o.workflow_id.to_owned(),
        object_type: o.object_type.to_owned(),
        record_id: o.record_id.to_owned(),
        owner: o.owner.map(|u| CrmUser {
            crm_user_id: u.crm_user_id.to_owned(),
            name: u.name.to_owned(),
            email: u.email.to_owned(),
        }),
        activity_type: o.activity_type.to_owned(),
        value: o.value.to_owned(),
        activity_date: o.activity_date,
        occurred_at: o.occurred_at,
        ..Default::default()
    };
    outcome.set_kind(o.kind);
    outcome.set_crm(o.crm);
    outcome
}

fn full<'a>(long: &'a str) -> OutcomeRef<'a> {
    OutcomeRef {
        outcome_id: "7e45fbfb-c36c-5188-bb29-0e92c8bb435c",
        event_id: "evt-1",
        company_id: "0b6a1c1e-0000-4000-8000-000000000001",
        integration_id: "0b6a1c1e-0000-4000-8000-000000000002",
        workflow_id: "6a2f0b0e-1c1d-4e2f-8a3b-4c5d6e7f8091",
        kind: OutcomeKind::Matched,
        object_type: "Opportunity",
        record_id: long,
        owner: Some(CrmUserRef {
            crm_user_id: "005A",
            name: "Ada Lovelace",
            email: "ada@example.com",
        }),
        activity_type: "deal_won",
        value: "1250.50",
        activity_date: Some(Timestamp {
            seconds: 1_764_000_000,
            nanos: 5,
        }),
        occurred_at: Some(Timestamp {
            seconds: 1_764_000_001,
            nanos: 0,
        }),
        crm: CrmKind::Salesforce,
    }
}

#[test]
fn writes_what_prost_writes_for_the_same_outcome() {
    let long = "r".repeat(300);
    let base = full("006A");
    let cases = [
        base,
        full(&long),
        OutcomeRef {
            kind: OutcomeKind::Retracted,
            value: "0",
            activity_date: None,
            ..base
        },
        OutcomeRef {
            owner: None,
            occurred_at: None,
            crm: CrmKind::Unspecified,
            kind: OutcomeKind::Unspecified,
            ..base
        },
        OutcomeRef {
            owner: Some(CrmUserRef::default()),
            activity_date: Some(Timestamp::default()),
            ..base
        },
        OutcomeRef {
            owner: Some(CrmUserRef {
                crm_user_id: "005B",
                ..CrmUserRef::default()
            }),
            occurred_at: Some(Timestamp {
                seconds: -62_135_596_800,
                nanos: -1,
            }),
            ..base
        },
        OutcomeRef {
            outcome_id: "",
            event_id: "",
            company_id: "",
            integration_id: "",
            workflow_id: "",
            object_type: "",
            record_id: "",
            activity_type: "",
            value: "",
            ..base
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let bytes = case.encode();
        assert_eq!(bytes, owned(case).encode_to_vec(), "case {i}");
        assert_eq!(case.encoded_len(), bytes.len(), "case {i}");
        assert_eq!(
            WorkflowOutcome::decode(bytes.as_slice()).unwrap(),
            owned(case),
            "case {i}"
        );
    }
}
