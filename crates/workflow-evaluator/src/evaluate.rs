//! One event in: merged into its record's state, the record judged whole by the integration's
//! active workflows, and out go the outcomes whose decision changed, a hydration request when
//! the workflows need fields the record never showed, and the record's new state (changelog).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crm_sync_kafka::transactional::{TransactionalHandler, Written};
use crm_sync_kafka::{Failure, Incoming, OutgoingMessage};
use crm_sync_proto::v1::{CrmEvent, OutcomeKind, RecordState, WorkflowMatchState};
use crm_sync_proto::view::{EventView, decode_event};
use crm_sync_proto::{Message, Timestamp};
use crm_sync_store::trail::dead_letters;
use crm_sync_store::workflows::StoredWorkflow;
use crm_sync_workflow::{Record, RecordView};
use sqlx::PgPool;
use uuid::Uuid;

use crate::counts::Counts;
use crate::judge::{Judgement, judge, judge_with};
use crate::legacy::LegacyIndex;
use crate::outputs::{self, Topics};
use crate::record::{self, Merged};
use crate::snapshot::{WorkflowSnapshot, Workflows};
use crate::state_limit::StateLimit;
use crate::store::{RecordStore, StoreError, Stored, Unreadable};
use crate::trail::{Entry, Trail};

/// How far apart ingest's clock and this host's are taken to be at most.
const CLOCK_SKEW: Duration = Duration::from_secs(5);

pub struct Evaluator {
    pub snapshot: Arc<WorkflowSnapshot>,
    pub pool: PgPool,
    pub store: Arc<RecordStore>,
    pub topics: Topics,
    pub hydration_interval: Duration,
    pub counts: Counts,
    pub legacy: LegacyIndex,
    pub trail: Trail,
    pub state_limit: StateLimit,
}

impl TransactionalHandler for Evaluator {
    async fn handle(&self, message: &Incoming<'_>) -> Result<Vec<OutgoingMessage>, Failure> {
        let EventView {
            event,
            fields,
            previous,
        } = decode_event(message.payload.unwrap_or_default()).map_err(|e| {
            Failure::permanent("undecodable", format!("not a crm_sync.v1.CrmEvent: {e}"))
        })?;
        let integration_id = Uuid::parse_str(&event.integration_id).map_err(|_| {
            Failure::permanent(
                "unknown_integration",
                format!("integration_id {:?} is not a UUID", event.integration_id),
            )
        })?;
        let (company_id, workflows) = self
            .integration(integration_id, event.received_at.as_ref())
            .await?;
        // Shared by the event's outputs: its outcomes and its record's state go under one key.
        let key: Arc<str> = match message.key {
            Some(k) => String::from_utf8_lossy(k).into(),
            None => format!(
                "{}/{}/{}",
                event.integration_id, event.object_type, event.record_id
            )
            .into(),
        };
        let partition = message.partition;
        let stored = self.stored(partition, &key).await?;
        let prior = match stored.as_ref().map(|s| s.view(&key)).transpose() {
            Ok(prior) => prior,
            Err(error) => self.unreadable(partition, &key, error)?,
        };
        let before = crate::fixed::before(&event, &prior);
        let mut merged = record::merge(prior, &event, (&fields, &previous));
        let entry = self.trail.entry(&event, (integration_id, company_id));
        if !merged.dirty && !event.fields_omitted {
            self.counts.event("unchanged");
            self.trail.stage(entry);
            return Ok(Vec::new());
        }
        if let Err(letter) = self.state_limit.check(&key, &merged, workflows.list.len()) {
            if self.trail.enabled() {
                dead_letters::record(&self.pool, crate::SERVICE.name, message, &letter).await;
            }
            return Err(Failure::Permanent(letter));
        }
        if before.is_some_and(|b| crate::fixed::fixes(b.as_ref(), &merged)) {
            self.counts.missed_webhook_fixed(integration_id);
        }
        let mut out = self
            .judge_merged(
                &event,
                &key,
                (integration_id, company_id),
                &workflows,
                (&mut merged, entry),
            )
            .await?;
        if let Some(request) = self.refetch(&event, &key, &mut merged.state, (&workflows, &out)) {
            out.push(request);
        }
        let encoded = merged.encode();
        out.push(outputs::message(
            &self.topics.records,
            &key,
            encoded.clone(),
            event.event_id.clone(),
            Some(partition),
        ));
        self.store
            .stage(partition, key.as_bytes().to_vec(), encoded);
        Ok(out)
    }

    fn sealed(&self) {
        self.store.seal();
        self.counts.seal();
        self.trail.seal();
    }

    fn committed(&self, written: &[Written]) {
        self.store.commit(written, &self.topics.records);
        self.counts.committed();
        self.trail.committed();
    }

    fn aborted(&self, partitions: &[i32]) {
        self.store.discard(partitions);
        self.counts.aborted();
        self.trail.aborted();
    }
}

impl Evaluator {
    /// The record's stored state, once its partition is caught up with the changelog.
    async fn stored(&self, partition: i32, key: &str) -> Result<Option<Stored>, Failure> {
        self.store
            .ready(partition)
            .await
            .map_err(Failure::transient)?;
        match self.store.get(partition, key.as_bytes()) {
            Ok(stored) => Ok(stored),
            Err(error) => self.unreadable(partition, key, error),
        }
    }

    /// A stored state that cannot be read: `None` (the record counts as never seen) when the
    /// changelog's own value is bad, else a transient failure, the batch handled again once the
    /// partition is restored (see [`RecordStore::unreadable`]).
    fn unreadable<T>(
        &self,
        partition: i32,
        key: &str,
        error: StoreError,
    ) -> Result<Option<T>, Failure> {
        match self.store.unreadable(partition, key, &error) {
            Unreadable::Absent => Ok(None),
            Unreadable::Restoring | Unreadable::Fault => Err(Failure::transient(error)),
        }
    }

    /// The integration's company and active workflows; an integration newer than the snapshot
    /// is looked up once more before the event is dead-lettered. Ingest found the integration
    /// when it received the event, so a snapshot read after then (give or take the hosts'
    /// clocks) that lacks it is final.
    async fn integration(
        &self,
        integration_id: Uuid,
        received_at: Option<&Timestamp>,
    ) -> Result<(Uuid, Arc<Workflows>), Failure> {
        let mut snapshot = self.snapshot.current();
        if !snapshot.contains_key(&integration_id) {
            let committed_by = received_at
                .and_then(|t| SystemTime::try_from(*t).ok())
                .map_or_else(SystemTime::now, |t| t + CLOCK_SKEW);
            self.snapshot
                .reload_unless_read_after(&self.pool, committed_by)
                .await
                .map_err(Failure::transient)?;
            snapshot = self.snapshot.current();
        }
        match snapshot.get(&integration_id) {
            Some(integration) => Ok((integration.company_id, integration.workflows.clone())),
            None => Err(Failure::permanent(
                "unknown_integration",
                format!("integration {integration_id} does not exist"),
            )),
        }
    }

    /// What a record seen for the first time already satisfies: activities recorded before the
    /// evaluator kept record state, so that they are updated and retracted like any other.
    async fn adopt(
        &self,
        workflows: &[Arc<StoredWorkflow>],
        record_id: &str,
    ) -> Result<Vec<WorkflowMatchState>, Failure> {
        if workflows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = workflows.iter().map(|w| w.id).collect();
        let recorded = crm_sync_store::workflows::recorded_activities(&self.pool, &ids, record_id)
            .await
            .map_err(Failure::transient)?;
        Ok(recorded
            .into_iter()
            .map(|a| WorkflowMatchState {
                workflow_id: a.workflow_id.to_string(),
                value: a.value,
                activity_date: Some(Timestamp {
                    seconds: a.activity_date.timestamp(),
                    nanos: a.activity_date.timestamp_subsec_nanos() as i32,
                }),
                owner_crm_user_id: a.crm_user_id,
            })
            .collect())
    }

    /// Judges the merged record if something a workflow can see changed; the outcomes and
    /// hydration request that follow (the state to store is updated with what was decided).
    /// The event's trail entry is staged with the verdicts.
    async fn judge_merged(
        &self,
        event: &CrmEvent,
        key: &Arc<str>,
        (integration_id, company_id): (Uuid, Uuid),
        active: &Arc<Workflows>,
        (merged, entry): (&mut Merged<'_>, Option<Entry>),
    ) -> Result<Vec<OutgoingMessage>, Failure> {
        let workflows = &active.list[..];
        let Some(change) = merged.judged_as(event) else {
            self.counts.event("no_match");
            self.trail.stage(entry);
            return Ok(Vec::new());
        };
        let state = &mut merged.state;
        let fields = record::Current::new(&merged.fields, &merged.changes);
        let previous = record::Before(&fields);
        let view = RecordView {
            object_type: &event.object_type,
            change,
            record: Record {
                fields: &fields,
                previous: record::previous(change, merged.new_record, &previous),
            },
            owner: state.owner.as_ref(),
        };
        let at = record::event_time(event);
        let mut judgement = judge_with(
            workflows,
            &view,
            &state.matches,
            at,
            &mut active.shared.for_one_record(),
        );
        // A record seen for the first time may have an activity from before the evaluator
        // kept state: only then does a retraction need the database to tell.
        if merged.new_record
            && judgement.unmatched_retractions > 0
            && self
                .legacy
                .may_have(&self.pool, integration_id, workflows, &event.record_id)
                .await
                .map_err(Failure::transient)?
        {
            let adopted = self.adopt(workflows, &event.record_id).await?;
            if !adopted.is_empty() {
                judgement = judge(workflows, &view, &adopted, at);
            }
        }
        self.trail
            .stage(entry.map(|e| e.judged(active, &judgement, &view)));
        let mut out = self.outcomes(event, key, company_id, state, &judgement);
        if let Some(request) = self.hydration(event, key, state, &judgement) {
            out.push(request);
        }
        state.matches = judgement.matches;
        Ok(out)
    }

    fn outcomes(
        &self,
        event: &CrmEvent,
        key: &Arc<str>,
        company_id: Uuid,
        state: &RecordState,
        judgement: &Judgement<'_>,
    ) -> Vec<OutgoingMessage> {
        for reason in &judgement.no_match {
            self.counts.no_match(reason.as_str());
        }
        let mut buffer = Uuid::encode_buffer();
        let company_id: &str = company_id.hyphenated().encode_lower(&mut buffer);
        let outcomes: Vec<_> = judgement
            .changes
            .iter()
            .map(|change| outputs::outcome(event, state, company_id, change))
            .collect();
        let matched = outcomes.iter().any(|o| o.kind == OutcomeKind::Matched);
        self.counts
            .event(if matched { "matched" } else { "no_match" });
        outcomes
            .into_iter()
            .map(|o| {
                self.counts.outcome(if o.kind == OutcomeKind::Matched {
                    "matched"
                } else {
                    "retracted"
                });
                outputs::message(&self.topics.matches, key, o.payload, o.id, None)
            })
            .collect()
    }

    /// A request to fetch the record whole, when workflows need fields it never showed and it
    /// was not asked for within the interval; also for a record pulled before, whose pull did
    /// not select the fields a workflow added since reads.
    fn hydration(
        &self,
        event: &CrmEvent,
        key: &Arc<str>,
        state: &mut RecordState,
        judgement: &Judgement<'_>,
    ) -> Option<OutgoingMessage> {
        if judgement.missing_fields.is_empty() {
            return None;
        }
        let now = outputs::now();
        if !outputs::hydration_due(state, &now, self.hydration_interval) {
            return None;
        }
        let missing = judgement.missing_fields.iter().cloned().collect();
        Some(self.hydrate(
            event,
            key,
            state,
            (missing, judgement.missing_for.clone()),
            now,
        ))
    }

    /// A request to fetch the record whole when the CRM left the event's fields out: what
    /// changed is unknown, whatever fields the record showed before. Asked for every such event
    /// (each stands for a change in the CRM), not only once per interval; not for a record
    /// deleted, nor when the event's judgement (`out`) asked already.
    fn refetch(
        &self,
        event: &CrmEvent,
        key: &Arc<str>,
        state: &mut RecordState,
        (workflows, out): (&Workflows, &[OutgoingMessage]),
    ) -> Option<OutgoingMessage> {
        let asked = || {
            out.iter()
                .any(|m| Arc::ptr_eq(&m.topic, &self.topics.hydrations))
        };
        if !event.fields_omitted || state.deleted || asked() {
            return None;
        }
        let reading: Vec<String> = workflows
            .list
            .iter()
            .filter(|w| w.spec.object_type.eq_ignore_ascii_case(&event.object_type))
            .map(|w| w.id.to_string())
            .collect();
        if reading.is_empty() {
            return None;
        }
        // No fields named: the answer selects every field the active workflows read.
        Some(self.hydrate(event, key, state, (Vec::new(), reading), outputs::now()))
    }

    fn hydrate(
        &self,
        event: &CrmEvent,
        key: &Arc<str>,
        state: &mut RecordState,
        (missing, workflow_ids): (Vec<String>, Vec<String>),
        now: Timestamp,
    ) -> OutgoingMessage {
        state.hydration_requested_at = Some(now);
        self.counts.hydration();
        let request = outputs::hydration_request(event, key, missing, workflow_ids, now);
        outputs::message(
            &self.topics.hydrations,
            key,
            request.encode_to_vec(),
            request.request_id.clone(),
            None,
        )
    }
}
