//! One event in, one outcome per workflow it concerns out: matched, or retracted.

use std::sync::Arc;

use crm_sync_kafka::transactional::TransactionalHandler;
use crm_sync_kafka::{Failure, Incoming, OutgoingMessage};
use crm_sync_proto::v1::{CrmEvent, CrmUser, OutcomeKind, WorkflowOutcome};
use crm_sync_proto::{Message, Timestamp};
use crm_sync_store::workflows::StoredWorkflow;
use crm_sync_workflow::{Decision, Match};
use sqlx::PgPool;
use uuid::Uuid;

use crate::snapshot::WorkflowSnapshot;

/// Namespace of outcome ids: v5(event id, workflow id), identical on every replay.
const OUTCOME_NAMESPACE: Uuid = Uuid::from_u128(0x0c8e_5d1b_9a4f_4b7e_8c21_7f3a_6d5e_4b2c);

pub struct Evaluator {
    pub snapshot: Arc<WorkflowSnapshot>,
    pub pool: PgPool,
    pub matches_topic: String,
}

impl TransactionalHandler for Evaluator {
    async fn handle(&self, message: &Incoming<'_>) -> Result<Vec<OutgoingMessage>, Failure> {
        let event = CrmEvent::decode(message.payload.unwrap_or_default()).map_err(|e| {
            Failure::permanent("undecodable", format!("not a crm_sync.v1.CrmEvent: {e}"))
        })?;
        let integration_id = Uuid::parse_str(&event.integration_id).map_err(|_| {
            Failure::permanent(
                "unknown_integration",
                format!("integration_id {:?} is not a UUID", event.integration_id),
            )
        })?;
        let outcomes = self.evaluate(integration_id, &event).await?;
        let matched = outcomes.iter().any(|o| o.kind() == OutcomeKind::Matched);
        // "no_match" means what DESIGN rule 3 counts: the event satisfied no active workflow
        // (retractions it causes are counted by kind below).
        metrics::counter!("crm_sync_evaluator_events_total", "outcome" => if matched { "matched" } else { "no_match" })
            .increment(1);
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let key = message
            .key
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_else(|| {
                format!(
                    "{}/{}/{}",
                    event.integration_id, event.object_type, event.record_id
                )
            });
        Ok(outcomes
            .iter()
            .map(|o| {
                let kind = if o.kind() == OutcomeKind::Matched {
                    "matched"
                } else {
                    "retracted"
                };
                metrics::counter!("crm_sync_evaluator_outcomes_total", "kind" => kind).increment(1);
                OutgoingMessage {
                    topic: self.matches_topic.clone(),
                    key: key.clone(),
                    payload: o.encode_to_vec(),
                    event_id: o.outcome_id.clone(),
                    headers: Vec::new(),
                }
            })
            .collect())
    }
}

impl Evaluator {
    async fn evaluate(
        &self,
        integration_id: Uuid,
        event: &CrmEvent,
    ) -> Result<Vec<WorkflowOutcome>, Failure> {
        let mut snapshot = self.snapshot.current();
        if !snapshot.contains_key(&integration_id) {
            // The integration may be newer than the snapshot: look once more before giving up.
            self.snapshot
                .reload(&self.pool)
                .await
                .map_err(Failure::transient)?;
            snapshot = self.snapshot.current();
        }
        let Some(integration) = snapshot.get(&integration_id) else {
            return Err(Failure::permanent(
                "unknown_integration",
                format!("integration {integration_id} does not exist"),
            ));
        };
        let mut outcomes = Vec::new();
        for workflow in &integration.workflows {
            match workflow.spec.decide(event) {
                Decision::Matched(m) => {
                    outcomes.push(matched(event, integration.company_id, workflow, m))
                }
                Decision::Retracted(r) => outcomes.push(retracted(
                    event,
                    integration.company_id,
                    workflow,
                    r.owner_crm_user_id,
                )),
                Decision::NoMatch(reason) => {
                    metrics::counter!("crm_sync_evaluator_no_match_total", "reason" => reason.as_str()).increment(1);
                }
            }
        }
        Ok(outcomes)
    }
}

fn outcome_id(event: &CrmEvent, workflow: &StoredWorkflow) -> String {
    Uuid::new_v5(
        &OUTCOME_NAMESPACE,
        format!("{}\u{1f}{}", event.event_id, workflow.id).as_bytes(),
    )
    .to_string()
}

fn owner(event: &CrmEvent, crm_user_id: Option<String>) -> Option<CrmUser> {
    crm_user_id.map(|id| {
        // The event's owner details (name, email) apply only if it is the same CRM user.
        let same = event.owner.as_ref().filter(|o| o.crm_user_id == id);
        CrmUser {
            crm_user_id: id,
            name: same.map(|o| o.name.clone()).unwrap_or_default(),
            email: same.map(|o| o.email.clone()).unwrap_or_default(),
        }
    })
}

fn base(event: &CrmEvent, company_id: Uuid, workflow: &StoredWorkflow) -> WorkflowOutcome {
    let mut outcome = WorkflowOutcome {
        outcome_id: outcome_id(event, workflow),
        event_id: event.event_id.clone(),
        company_id: company_id.to_string(),
        integration_id: event.integration_id.clone(),
        workflow_id: workflow.id.to_string(),
        object_type: event.object_type.clone(),
        record_id: event.record_id.clone(),
        activity_type: workflow.spec.activity_type.clone(),
        occurred_at: event.occurred_at.or(event.received_at),
        ..Default::default()
    };
    outcome.set_crm(event.crm());
    outcome
}

fn matched(
    event: &CrmEvent,
    company_id: Uuid,
    workflow: &StoredWorkflow,
    m: Match,
) -> WorkflowOutcome {
    let mut outcome = base(event, company_id, workflow);
    outcome.owner = owner(event, m.owner_crm_user_id);
    outcome.value = m.value.to_string();
    outcome.activity_date = m
        .activity_date
        .map(|d| Timestamp {
            seconds: d.timestamp(),
            nanos: d.timestamp_subsec_nanos() as i32,
        })
        .or(event.occurred_at)
        .or(event.received_at);
    outcome.set_kind(OutcomeKind::Matched);
    outcome
}

/// The activity of (workflow, record), if any, is to be retracted; value and date do not apply.
fn retracted(
    event: &CrmEvent,
    company_id: Uuid,
    workflow: &StoredWorkflow,
    owner_crm_user_id: Option<String>,
) -> WorkflowOutcome {
    let mut outcome = base(event, company_id, workflow);
    outcome.owner = owner(event, owner_crm_user_id);
    outcome.value = "0".to_owned();
    outcome.set_kind(OutcomeKind::Retracted);
    outcome
}
