//! The active workflows' verdicts on a record that changed, compared with what the record
//! satisfied before: an outcome is written only when that changes (a new match, another value,
//! date or owner, or a retraction of a match that existed).

use std::collections::BTreeSet;
use std::sync::Arc;

use crm_sync_proto::Timestamp;
use crm_sync_proto::v1::{ChangeType, WorkflowMatchState};
use crm_sync_store::workflows::StoredWorkflow;
use crm_sync_workflow::{Decision, EachTime, Leaves, Match, NoMatch, RecordView, RetractReason};

/// What changed for one workflow.
#[derive(Debug)]
pub enum Change<'w> {
    /// The record newly satisfies the workflow, or its value, date or owner for it changed.
    Matched {
        workflow: &'w StoredWorkflow,
        now: WorkflowMatchState,
    },
    /// The record satisfied the workflow and no longer does (or was deleted).
    Retracted {
        workflow: &'w StoredWorkflow,
        owner_crm_user_id: String,
    },
    /// The record was deleted while it satisfied a workflow that is not active now: a delete
    /// retracts every activity of the record, whatever became of the workflow since (its
    /// match names all a retraction needs).
    RetractedInactive {
        workflow_id: String,
        owner_crm_user_id: String,
    },
}

/// What one workflow made of the change, for the record trail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Newly matched, or its value, date or owner changed.
    Matched,
    /// Still satisfied; the activity stays as it was.
    StillMatches,
    Retracted(RetractReason),
    /// A record deleted that counted for a workflow since moved to another object: its
    /// activity goes with the record all the same.
    RetractedMoved,
    /// A record deleted that counted for a workflow inactive now (not judged: the trail names
    /// it apart from the active workflows' verdicts).
    RetractedInactive,
    /// A record deleted that had not counted: nothing to retract.
    DeletedUncounted,
    NoMatch(NoMatch),
}

#[derive(Debug, Default)]
pub struct Judgement<'w> {
    /// Per workflow (by its index in the workflows judged), its verdict.
    pub verdicts: Vec<(usize, Verdict)>,
    pub changes: Vec<Change<'w>>,
    /// Every workflow the record satisfies after this change (inactive workflows' entries are
    /// carried over untouched: deactivating a workflow rewrites no history; a delete retracts
    /// them all the same).
    pub matches: Vec<WorkflowMatchState>,
    /// Why workflows that the record did not and does not satisfy said no.
    pub no_match: Vec<NoMatch>,
    /// Fields some workflow needs that the record has never shown.
    pub missing_fields: BTreeSet<String>,
    pub missing_for: Vec<String>,
    /// Retractions that were dropped because the state knows of no match to retract.
    pub unmatched_retractions: usize,
}

pub fn judge<'w>(
    workflows: &'w [Arc<StoredWorkflow>],
    view: &RecordView<'_>,
    prior: &[WorkflowMatchState],
    event_time: Timestamp,
) -> Judgement<'w> {
    judge_with(workflows, view, prior, event_time, &mut EachTime)
}

/// [`judge`], the workflows sharing the verdicts of the leaves `leaves` remembers.
pub fn judge_with<'w>(
    workflows: &'w [Arc<StoredWorkflow>],
    view: &RecordView<'_>,
    prior: &[WorkflowMatchState],
    event_time: Timestamp,
    leaves: &mut impl Leaves,
) -> Judgement<'w> {
    let deleted = view.change == ChangeType::Deleted;
    // A verdict per workflow, and about as many matches: sized once, not grown per push.
    let mut judgement = Judgement {
        verdicts: Vec::with_capacity(workflows.len()),
        matches: Vec::with_capacity(workflows.len().max(prior.len())),
        ..Judgement::default()
    };
    for (index, workflow) in workflows.iter().enumerate() {
        // Formatted on the stack: a String per workflow per event only where one is kept.
        let mut buffer = uuid::Uuid::encode_buffer();
        let id: &str = workflow.id.hyphenated().encode_lower(&mut buffer);
        let was = prior.iter().find(|m| m.workflow_id == id);
        match workflow.spec.decide_with(view, leaves) {
            Decision::Matched(m) => {
                let now = match_state(id.to_owned(), &m, was, event_time);
                judgement.keep(index, workflow, was, now);
            }
            Decision::Retracted(r) => match was {
                Some(was) => {
                    judgement
                        .verdicts
                        .push((index, Verdict::Retracted(r.reason)));
                    judgement.changes.push(Change::Retracted {
                        workflow,
                        owner_crm_user_id: r
                            .owner_crm_user_id
                            .unwrap_or_else(|| was.owner_crm_user_id.clone()),
                    })
                }
                // Nothing to retract, as far as the state knows: the record did not satisfy
                // the workflow before either.
                None => {
                    let verdict = match r.reason {
                        RetractReason::NoLongerMatches => {
                            judgement.no_match.push(NoMatch::Conditions);
                            Verdict::NoMatch(NoMatch::Conditions)
                        }
                        _ => Verdict::DeletedUncounted,
                    };
                    judgement.verdicts.push((index, verdict));
                    judgement.unmatched_retractions += 1;
                }
            },
            Decision::NoMatch(reason) => match was {
                // Deleted, but the workflow now names another object: the activity it
                // counted goes with the record all the same.
                Some(was) if deleted => {
                    judgement.retract(index, workflow, reason, was.owner_crm_user_id.clone());
                }
                // Still satisfied as far as the record tells (e.g. "changed to Won" and then
                // another field changed): the activity stays, with the record's values now.
                Some(was) => {
                    let now = match (reason, workflow.spec.matched(view)) {
                        (NoMatch::NoChange, Decision::Matched(m)) => {
                            match_state(id.to_owned(), &m, Some(was), event_time)
                        }
                        _ => was.clone(),
                    };
                    judgement.keep(index, workflow, Some(was), now);
                }
                None => {
                    judgement.verdicts.push((index, Verdict::NoMatch(reason)));
                    judgement.refused(workflow, view, reason, id)
                }
            },
        }
    }
    judgement.carry_inactive(workflows, prior, deleted);
    judgement
}

impl<'w> Judgement<'w> {
    /// A deleted record's activity of a workflow that now says no for `reason` (another object:
    /// it was moved since it counted the record).
    fn retract(
        &mut self,
        index: usize,
        workflow: &'w StoredWorkflow,
        reason: NoMatch,
        owner_crm_user_id: String,
    ) {
        let verdict = match reason {
            NoMatch::OtherObject => Verdict::RetractedMoved,
            _ => Verdict::Retracted(RetractReason::Deleted),
        };
        self.verdicts.push((index, verdict));
        self.changes.push(Change::Retracted {
            workflow,
            owner_crm_user_id,
        });
    }

    /// The matches of workflows not judged (inactive now): kept, unless the record was deleted.
    fn carry_inactive(
        &mut self,
        workflows: &[Arc<StoredWorkflow>],
        prior: &[WorkflowMatchState],
        deleted: bool,
    ) {
        for m in prior {
            // Parsed once, not every workflow id formatted per prior match.
            let id = uuid::Uuid::parse_str(&m.workflow_id).ok();
            if workflows.iter().any(|w| Some(w.id) == id) {
                continue;
            }
            if deleted {
                self.changes.push(Change::RetractedInactive {
                    workflow_id: m.workflow_id.clone(),
                    owner_crm_user_id: m.owner_crm_user_id.clone(),
                });
            } else {
                self.matches.push(m.clone());
            }
        }
    }

    fn keep(
        &mut self,
        index: usize,
        workflow: &'w StoredWorkflow,
        was: Option<&WorkflowMatchState>,
        now: WorkflowMatchState,
    ) {
        let changed = was != Some(&now);
        self.verdicts.push((
            index,
            if changed {
                Verdict::Matched
            } else {
                Verdict::StillMatches
            },
        ));
        if changed {
            self.changes.push(Change::Matched {
                workflow,
                now: now.clone(),
            });
        }
        self.matches.push(now);
    }

    fn refused(
        &mut self,
        workflow: &StoredWorkflow,
        view: &RecordView<'_>,
        reason: NoMatch,
        id: &str,
    ) {
        self.no_match.push(reason);
        if matches!(reason, NoMatch::Unknown | NoMatch::MissingValue) {
            let fields = view.record.fields;
            let missing: Vec<&str> = workflow
                .spec
                .needed_fields()
                .into_iter()
                .filter(|f| fields.get(f).is_none())
                .collect();
            if !missing.is_empty() {
                self.missing_fields
                    .extend(missing.into_iter().map(str::to_owned));
                self.missing_for.push(id.to_owned());
            }
        }
    }
}

/// The activity a match makes: the workflow's date field, else the date it was first counted
/// with, else the event's time (so that an update does not move an undated activity).
fn match_state(
    workflow_id: String,
    m: &Match,
    was: Option<&WorkflowMatchState>,
    event_time: Timestamp,
) -> WorkflowMatchState {
    let activity_date = m
        .activity_date
        .map(|d| Timestamp {
            seconds: d.timestamp(),
            nanos: d.timestamp_subsec_nanos() as i32,
        })
        .or_else(|| was.and_then(|w| w.activity_date))
        .unwrap_or(event_time);
    WorkflowMatchState {
        workflow_id,
        value: m.value.to_string(),
        activity_date: Some(activity_date),
        owner_crm_user_id: m.owner_crm_user_id.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
#[path = "judge_tests.rs"]
pub(crate) mod tests;
