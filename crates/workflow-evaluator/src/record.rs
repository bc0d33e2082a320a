//! Merging an event into its record's known state. Values are kept field by field with the CRM
//! time they were set, so an older event (a webhook retried late, a pull that raced a webhook)
//! never moves a field back; what the merge changed, and what the fields were before, is what
//! the workflows then judge.

use std::cmp::Ordering;

use crm_sync_proto::Timestamp;
use crm_sync_proto::v1::{ChangeType, CrmEvent, CrmUser, FieldValue, KnownField, RecordState};
use crm_sync_workflow::Fields;

/// The outcome of merging one event.
#[derive(Debug)]
pub struct Merged {
    pub state: RecordState,
    /// The state differs from before (values, the times they were set, flags): it is written to
    /// the changelog.
    pub dirty: bool,
    /// Something a workflow can see changed (a field's value, the owner, deleted or not, the
    /// record became complete): only then are the workflows judged again.
    pub changed: bool,
    /// The record's values before this event, for `changed`, `changed_to` and `changed_from`:
    /// the stored value of every known field, or the previous value the event itself sent for a
    /// field the state has not seen (a field in neither is unknown).
    pub previous: Fields,
    /// Nothing was known of the record before this event.
    pub new_record: bool,
}

/// The CRM time of an event: when the change happened, else when ingest received it.
pub fn event_time(event: &CrmEvent) -> Timestamp {
    event
        .occurred_at
        .or(event.received_at)
        .unwrap_or(Timestamp {
            seconds: 0,
            nanos: 0,
        })
}

fn compare(a: &Timestamp, b: &Timestamp) -> Ordering {
    (a.seconds, a.nanos).cmp(&(b.seconds, b.nanos))
}

/// True when `t` is older than `known` (unknown times count as the oldest).
fn older(t: &Timestamp, known: Option<&Timestamp>) -> bool {
    known.is_some_and(|k| compare(t, k) == Ordering::Less)
}

pub fn merge(prior: Option<RecordState>, event: &CrmEvent) -> Merged {
    let new_record = prior.is_none();
    let state = prior.unwrap_or_else(|| RecordState {
        integration_id: event.integration_id.clone(),
        crm: event.crm,
        object_type: event.object_type.clone(),
        record_id: event.record_id.clone(),
        ..Default::default()
    });
    let previous = current_fields(&state);
    let empty_before = state.complete || (new_record && event.change_type() == ChangeType::Created);
    let mut merged = Merged {
        state,
        dirty: new_record,
        changed: new_record,
        previous,
        new_record,
    };
    let t = event_time(event);
    for (name, value) in &event.fields {
        merged.field(event, &t, name, value, empty_before);
    }
    merge_owner(&mut merged, event, &t);
    merge_flags(&mut merged, event, &t);
    let state = &mut merged.state;
    if state.updated_at.is_none() || older(&state.updated_at.unwrap_or_default(), Some(&t)) {
        state.updated_at = Some(t);
        merged.dirty = true;
    }
    if merged.dirty {
        merged.state.last_event_id = event.event_id.clone();
    }
    merged
}

impl Merged {
    fn field(
        &mut self,
        event: &CrmEvent,
        t: &Timestamp,
        name: &str,
        value: &FieldValue,
        empty_before: bool,
    ) {
        match self.state.fields.get_mut(name) {
            Some(known) if older(t, known.set_at.as_ref()) => {}
            Some(known) => {
                if known.value.as_ref() != Some(value) {
                    if let Some(sent) = event.previous_fields.get(name) {
                        self.previous.insert(name.to_owned(), sent.clone());
                    }
                    known.value = Some(value.clone());
                    self.changed = true;
                    self.dirty = true;
                }
                if known.set_at.as_ref() != Some(t) {
                    known.set_at = Some(*t);
                    self.dirty = true;
                }
            }
            None => {
                match event.previous_fields.get(name) {
                    Some(sent) => {
                        self.previous.insert(name.to_owned(), sent.clone());
                    }
                    None if empty_before => {
                        self.previous.insert(name.to_owned(), null());
                    }
                    None => {}
                }
                self.state.fields.insert(
                    name.to_owned(),
                    KnownField {
                        value: Some(value.clone()),
                        set_at: Some(*t),
                    },
                );
                self.changed = true;
                self.dirty = true;
            }
        }
    }
}

fn null() -> FieldValue {
    FieldValue {
        kind: Some(crm_sync_proto::v1::field_value::Kind::NullValue(true)),
    }
}

/// The owner an event names replaces the stored one unless the event is older than the state.
fn merge_owner(merged: &mut Merged, event: &CrmEvent, t: &Timestamp) {
    let state = &mut merged.state;
    let Some(owner) = event.owner.as_ref().filter(|o| !o.crm_user_id.is_empty()) else {
        return;
    };
    if older(t, state.updated_at.as_ref()) {
        return;
    }
    let stored = state.owner.get_or_insert_with(CrmUser::default);
    if stored.crm_user_id != owner.crm_user_id {
        *stored = owner.clone();
        merged.changed = true;
        merged.dirty = true;
        return;
    }
    // The same user: keep the details the newest event that has them gave.
    for (mine, theirs) in [
        (&mut stored.name, &owner.name),
        (&mut stored.email, &owner.email),
    ] {
        if !theirs.is_empty() && mine != theirs {
            mine.clone_from(theirs);
            merged.dirty = true;
        }
    }
}

/// Deleted, undeleted (a newer create or update after a delete), and complete (a full snapshot).
fn merge_flags(merged: &mut Merged, event: &CrmEvent, t: &Timestamp) {
    let state = &mut merged.state;
    match event.change_type() {
        ChangeType::Deleted if !older(t, state.updated_at.as_ref()) && !state.deleted => {
            state.deleted = true;
            state.deleted_at = Some(*t);
            merged.changed = true;
            merged.dirty = true;
        }
        ChangeType::Created | ChangeType::Updated
            if state.deleted
                && state
                    .deleted_at
                    .as_ref()
                    .is_none_or(|d| compare(t, d) == Ordering::Greater) =>
        {
            state.deleted = false;
            state.deleted_at = None;
            merged.changed = true;
            merged.dirty = true;
        }
        _ => {}
    }
    if event.full_snapshot && !state.complete {
        state.complete = true;
        merged.changed = true;
        merged.dirty = true;
    }
}

/// The record's current fields, by name.
pub fn current_fields(state: &RecordState) -> Fields {
    state
        .fields
        .iter()
        .filter_map(|(name, known)| Some((name.clone(), known.value.clone()?)))
        .collect()
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
