//! Merging an event into its record's known state. Values are kept field by field with the CRM
//! time they were set, so an older event (a webhook retried late, a pull that raced a webhook)
//! never moves a field back; what the merge changed, and what the fields were before, is what
//! the workflows then judge.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

use crm_sync_proto::Timestamp;
use crm_sync_proto::v1::field_value::Kind;
use crm_sync_proto::v1::{ChangeType, CrmEvent, CrmUser, FieldValue, KnownField, RecordState};
use crm_sync_proto::view::FieldRef;
use crm_sync_workflow::{FieldLookup, Previous};

/// What a merge changed: each field the event changed, with what it was before (the previous
/// value the event sent, else the stored one; `None` when unknown). A field not here was before
/// what it is now, so nothing of the record is copied to know it.
pub type Changes<'e> = BTreeMap<&'e str, Option<Cow<'e, FieldValue>>>;

/// The outcome of merging one event.
#[derive(Debug)]
pub struct Merged<'e> {
    pub state: RecordState,
    /// The state differs from before (values, the times they were set, flags): it is written to
    /// the changelog.
    pub dirty: bool,
    /// Something a workflow can see changed (a field's value, the owner, deleted or not, the
    /// record became complete): only then are the workflows judged again.
    pub changed: bool,
    /// The fields' values before this event, for `changed`, `changed_to` and `changed_from`.
    pub changes: Changes<'e>,
    /// Nothing was known of the record before this event.
    pub new_record: bool,
}

static NULL: FieldValue = FieldValue {
    kind: Some(Kind::NullValue(true)),
};

/// A record's current values as the workflows read them. A complete record (one pulled whole
/// from its CRM) has no unknown fields: one it lacks is empty.
///
/// The fields are hashed by name once per judgement: ten workflows read a record's fields about
/// seventy times, and each read of the ordered map compared names a dozen times.
#[derive(Debug)]
pub struct Current<'s> {
    state: &'s RecordState,
    index: foldhash::HashMap<&'s str, &'s FieldValue>,
}

impl<'s> Current<'s> {
    pub fn new(state: &'s RecordState) -> Self {
        let mut index = foldhash::HashMap::with_capacity_and_hasher(
            state.fields.len(),
            foldhash::fast::RandomState::default(),
        );
        for (name, known) in &state.fields {
            if let Some(value) = known.value.as_ref() {
                index.insert(name.as_str(), value);
            }
        }
        Current { state, index }
    }

    fn stored(&self, name: &str) -> Option<&'s FieldValue> {
        self.index.get(name).copied()
    }
}

impl FieldLookup for Current<'_> {
    fn get(&self, name: &str) -> Option<&FieldValue> {
        self.stored(name).or(self.state.complete.then_some(&NULL))
    }
}

/// A record's values before the event that was merged into it: what the merge changed, else
/// the current value. A complete record's unknown fields are empty.
#[derive(Debug, Clone, Copy)]
pub struct Before<'s> {
    pub current: &'s Current<'s>,
    pub changes: &'s Changes<'s>,
}

impl FieldLookup for Before<'_> {
    fn get(&self, name: &str) -> Option<&FieldValue> {
        let before = match self.changes.get(name) {
            Some(before) => before.as_deref(),
            None => self.current.stored(name),
        };
        before.or(self.current.state.complete.then_some(&NULL))
    }
}

/// What the workflows know of the record's values before `event`: nothing for a record the event
/// created, nothing at all for a delete, else what the merge says they were.
pub fn previous<'a>(event: &CrmEvent, new_record: bool, before: &'a Before<'a>) -> Previous<'a> {
    match event.change_type() {
        ChangeType::Created if new_record => Previous::Nothing,
        ChangeType::Deleted => Previous::Unknown,
        _ => Previous::Sent(before),
    }
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

/// Merges `event`, whose fields are `fields` (its bytes' view of them, in name order).
pub fn merge<'e>(
    prior: Option<RecordState>,
    event: &'e CrmEvent,
    fields: &[FieldRef<'e>],
) -> Merged<'e> {
    let new_record = prior.is_none();
    let state = prior.unwrap_or_else(|| RecordState {
        integration_id: event.integration_id.clone(),
        crm: event.crm,
        object_type: event.object_type.clone(),
        record_id: event.record_id.clone(),
        ..Default::default()
    });
    let empty_before = state.complete || (new_record && event.change_type() == ChangeType::Created);
    let mut merged = Merged {
        state,
        dirty: new_record,
        changed: new_record,
        changes: Changes::new(),
        new_record,
    };
    let t = event_time(event);
    merged.fields(event, fields, &t, empty_before);
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

impl<'e> Merged<'e> {
    /// Merges the event's fields, which come in key order: the changes and the fields new to
    /// the record are collected in that order and built in bulk, rather than searched for and
    /// inserted one by one into ordered maps (an event of 25 fields spent 400 string
    /// comparisons on that). Values are read where the event's bytes hold them; only those the
    /// record takes are copied.
    fn fields(
        &mut self,
        event: &'e CrmEvent,
        fields: &[FieldRef<'e>],
        t: &Timestamp,
        empty_before: bool,
    ) {
        let mut changes = Vec::new();
        let mut added = Vec::new();
        for &(name, value) in fields {
            // Only a field the event changes needs the previous value the event sent.
            let sent = || event.previous_fields.get(name).map(Cow::Borrowed);
            match self.state.fields.get_mut(name) {
                Some(known) if older(t, known.set_at.as_ref()) => {}
                Some(known) => {
                    if !known.value.as_ref().is_some_and(|v| value.is(v)) {
                        let stored = known.value.replace(value.to_value());
                        changes.push((name, sent().or(stored.map(Cow::Owned))));
                    }
                    if known.set_at.as_ref() != Some(t) {
                        known.set_at = Some(*t);
                        self.dirty = true;
                    }
                }
                None => {
                    let empty = empty_before.then_some(Cow::Borrowed(&NULL));
                    changes.push((name, sent().or(empty)));
                    let field = KnownField {
                        value: Some(value.to_value()),
                        set_at: Some(*t),
                    };
                    added.push((name.to_owned(), field));
                }
            }
        }
        if !changes.is_empty() {
            self.changed = true;
            self.dirty = true;
            self.changes = changes.into_iter().collect();
        }
        // A record's first event builds its map in bulk; later ones rarely add a field.
        if self.state.fields.is_empty() {
            self.state.fields = added.into_iter().collect();
        } else {
            self.state.fields.extend(added);
        }
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

/// [`merge`] with the event's fields viewed as the handler views them in its bytes.
#[cfg(test)]
pub(crate) fn merge_event(prior: Option<RecordState>, event: &CrmEvent) -> Merged<'_> {
    let fields: Vec<FieldRef<'_>> = event
        .fields
        .iter()
        .map(|(name, value)| (name.as_str(), crm_sync_proto::view::ValueRef::of(value)))
        .collect();
    merge(prior, event, &fields)
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
