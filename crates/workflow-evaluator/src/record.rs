//! Merging an event into its record's known state. Values are kept field by field with the CRM
//! time they were set, so an older event (a webhook retried late, a pull that raced a webhook)
//! never moves a field back; what the merge changed, and what the fields were before, is what
//! the workflows then judge.

use std::cmp::Ordering;

use crm_sync_proto::Timestamp;
use crm_sync_proto::v1::{ChangeType, CrmEvent, CrmUser, RecordState};
use crm_sync_proto::view::{
    FieldRef, KnownFieldRef, KnownRef, StateView, ValueRef, encode_state, previous_value,
    state_len_bound,
};
use crm_sync_workflow::{FieldLookup, Previous};

/// What a merge changed: each field the event changed, with what it was before (the previous
/// value the event sent, else the stored one; `None` when unknown). A field not here was before
/// what it is now, so nothing of the record is copied to know it.
///
/// In name order, as the merge finds them: kept as it comes rather than built into an ordered
/// map on every event (a tenth of the merge); [`Current`] joins it with the fields.
#[derive(Debug, Default)]
pub struct Changes<'a>(Vec<(&'a str, Option<ValueRef<'a>>)>);

impl Changes<'_> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The outcome of merging one event. Its fields are borrowed from the stored state and the
/// event: only the state's other parts are owned.
#[derive(Debug)]
pub struct Merged<'a> {
    /// The record's state but its fields (`state.fields` is empty).
    pub state: RecordState,
    /// The record's fields, in name order.
    pub fields: Vec<KnownFieldRef<'a>>,
    /// The state differs from before (values, the times they were set, flags): it is written to
    /// the changelog.
    pub dirty: bool,
    /// Something a workflow can see changed (a field's value, the owner, deleted or not, the
    /// record became complete): only then are the workflows judged again.
    pub changed: bool,
    /// The fields' values before this event, for `changed`, `changed_to` and `changed_from`.
    pub changes: Changes<'a>,
    /// Nothing was known of the record before this event.
    pub new_record: bool,
    /// This event deleted the record: the merge accepted its delete (one older than what the
    /// record shows, e.g. a pulled snapshot that raced a newer webhook, is not).
    pub deleted_now: bool,
}

impl Merged<'_> {
    /// The record's new state, to store and to write to the changelog.
    pub fn encode(&self) -> Vec<u8> {
        encode_state(&self.state, &self.fields)
    }

    /// At least the length of [`Merged::encode`]'s bytes, without encoding them.
    pub fn encoded_len_bound(&self) -> usize {
        state_len_bound(&self.state, &self.fields)
    }

    /// The change the workflows judge, if any: none when nothing they can see changed, or when
    /// the record is deleted and this event is not its delete (later-arriving older updates
    /// change its stored fields but count for nothing). A delete the merge refused counts as an
    /// update of whatever else it carried, never as the record's delete.
    pub fn judged_as(&self, event: &CrmEvent) -> Option<ChangeType> {
        if !self.changed || (self.state.deleted && !self.deleted_now) {
            return None;
        }
        Some(match event.change_type() {
            ChangeType::Deleted if !self.deleted_now => ChangeType::Updated,
            change => change,
        })
    }

    /// A field's current value.
    pub fn value(&self, name: &str) -> Option<ValueRef<'_>> {
        let at = self.fields.binary_search_by(|(n, _)| (*n).cmp(name)).ok()?;
        self.fields[at].1.value
    }
}

const NULL: ValueRef<'static> = ValueRef::Null(true);

/// A field's value now and, if the merge changed it, what it was before.
#[derive(Debug, Clone, Copy)]
struct Slot<'s> {
    now: ValueRef<'s>,
    before: Option<Option<ValueRef<'s>>>,
}

/// A record's current values as the workflows read them, and their values before the event
/// (see [`Before`]). A field the record never showed is unknown, also in a record pulled whole:
/// pulls and hydrations select only the fields the workflows read when they ran, so a snapshot
/// is complete only for the fields it carried (a requested field without a value comes as an
/// explicit null, and so is known to be empty).
///
/// The fields are hashed by name once per judgement: ten workflows read a record's fields about
/// seventy times, and each read of the ordered map compared names a dozen times. What a field
/// was before sits in its entry, so reading it costs no second search.
#[derive(Debug)]
pub struct Current<'s> {
    index: foldhash::HashMap<&'s str, Slot<'s>>,
}

impl<'s> Current<'s> {
    /// `fields` and `changes` both in name order, as the merge leaves them.
    pub fn new(fields: &[KnownFieldRef<'s>], changes: &Changes<'s>) -> Self {
        let mut index = foldhash::HashMap::with_capacity_and_hasher(
            fields.len(),
            foldhash::fast::RandomState::default(),
        );
        let mut changes = changes.0.iter().peekable();
        for (name, known) in fields {
            let before = changes.next_if(|(changed, _)| changed == name).map(|c| c.1);
            if let Some(now) = known.value {
                index.insert(*name, Slot { now, before });
            }
        }
        // Every change names a field the event set (the merge makes both), so the join ends
        // with every change taken; stepping over strays cost a comparison per field.
        debug_assert!(changes.next().is_none(), "a change names no field");
        Current { index }
    }
}

impl FieldLookup for Current<'_> {
    fn get(&self, name: &str) -> Option<ValueRef<'_>> {
        self.index.get(name).map(|slot| slot.now)
    }
}

/// A record's values before the event that was merged into it: what the merge changed, else
/// the current value; unknown for a field the record never showed.
#[derive(Debug, Clone, Copy)]
pub struct Before<'s>(pub &'s Current<'s>);

impl FieldLookup for Before<'_> {
    fn get(&self, name: &str) -> Option<ValueRef<'_>> {
        self.0
            .index
            .get(name)
            .and_then(|slot| slot.before.unwrap_or(Some(slot.now)))
    }
}

/// What the workflows know of the record's values before a change (`change`, as judged): nothing
/// for a record the event created, nothing at all for a delete, else what the merge says they
/// were.
pub fn previous<'a>(change: ChangeType, new_record: bool, before: &'a Before<'a>) -> Previous<'a> {
    match change {
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

/// Merges `event`, whose fields are `fields` (its bytes' view of them, in name order), into
/// the record's stored state (`prior`, its fields viewed in its bytes).
pub fn merge<'a>(
    prior: Option<StateView<'a>>,
    event: &'a CrmEvent,
    (fields, previous): (&[FieldRef<'a>], &[FieldRef<'a>]),
) -> Merged<'a> {
    let new_record = prior.is_none();
    let StateView {
        state,
        fields: known,
    } = prior.unwrap_or_else(|| StateView {
        state: RecordState {
            integration_id: event.integration_id.clone(),
            crm: event.crm,
            object_type: event.object_type.clone(),
            record_id: event.record_id.clone(),
            ..Default::default()
        },
        fields: Vec::new(),
    });
    // Only a record this event created is known to have had nothing before. A full snapshot
    // says nothing of the fields it did not carry, then or now.
    let empty_before = new_record && event.change_type() == ChangeType::Created;
    let mut merged = Merged {
        state,
        fields: Vec::new(),
        dirty: new_record,
        changed: new_record,
        changes: Changes::default(),
        new_record,
        deleted_now: false,
    };
    let t = event_time(event);
    merged.fields(known, (fields, previous), &t, empty_before);
    merge_owner(&mut merged, event, &t);
    merge_flags(&mut merged, event, &t);
    let state = &mut merged.state;
    // An event whose fields the CRM left out says when the record changed, not what: the
    // snapshot fetched for it brings the change, stamped with the CRM's modification time,
    // which can be a little older than the change's commit. That snapshot must not count as
    // older than the record.
    let stamps = !event.fields_omitted;
    if stamps
        && (state.updated_at.is_none() || older(&state.updated_at.unwrap_or_default(), Some(&t)))
    {
        state.updated_at = Some(t);
        merged.dirty = true;
    }
    if merged.dirty {
        merged.state.last_event_id = event.event_id.clone();
    }
    merged
}

impl<'a> Merged<'a> {
    /// Merges the event's fields into the record's: both come in name order, so one pass over
    /// the two yields the record's new fields in order, and the changes, without searching or
    /// inserting into maps. Nothing is copied: the fields stay where the stored state's and the
    /// event's bytes hold them.
    fn fields(
        &mut self,
        known: Vec<KnownFieldRef<'a>>,
        (fields, previous): (&[FieldRef<'a>], &[FieldRef<'a>]),
        t: &Timestamp,
        empty_before: bool,
    ) {
        let mut merged = Vec::with_capacity(known.len() + fields.len());
        // Most events change most of what they send: grown a push at a time, this was
        // reallocated twice per event.
        let mut changes = Vec::with_capacity(fields.len());
        let mut known = known.into_iter().peekable();
        let now = |value| KnownRef {
            value: Some(value),
            set_at: Some(*t),
        };
        for &(name, value) in fields {
            merged.extend(std::iter::from_fn(|| known.next_if(|(k, _)| *k < name)));
            // Only a field the event changes needs the previous value the event sent.
            let sent = || previous_value(previous, name);
            match known.next_if(|(k, _)| *k == name) {
                Some(kept) if older(t, kept.1.set_at.as_ref()) => merged.push(kept),
                Some((_, stored)) => {
                    if stored.value != Some(value) {
                        changes.push((name, sent().or(stored.value)));
                    }
                    if stored.set_at.as_ref() != Some(t) {
                        self.dirty = true;
                    }
                    merged.push((name, now(value)));
                }
                None => {
                    changes.push((name, sent().or(empty_before.then_some(NULL))));
                    merged.push((name, now(value)));
                }
            }
        }
        merged.extend(known);
        if !changes.is_empty() {
            self.changed = true;
            self.dirty = true;
            self.changes = Changes(changes);
        }
        self.fields = merged;
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

/// Deleted, undeleted (a newer create or update after a delete), and complete (a full snapshot
/// was applied; see [`Current`] for what that does and does not tell).
fn merge_flags(merged: &mut Merged, event: &CrmEvent, t: &Timestamp) {
    let state = &mut merged.state;
    match event.change_type() {
        ChangeType::Deleted if !older(t, state.updated_at.as_ref()) && !state.deleted => {
            state.deleted = true;
            state.deleted_at = Some(*t);
            merged.deleted_now = true;
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

/// [`merge`] with the stored state and the event's fields viewed as the handler views them in
/// their bytes. The stored bytes are leaked: the merge borrows them, and tests are short.
#[cfg(test)]
pub(crate) fn merge_event<'a>(prior: Option<RecordState>, event: &'a CrmEvent) -> Merged<'a> {
    use crm_sync_proto::Message;
    let prior = prior.map(|state| {
        let bytes: &'static [u8] = Box::leak(state.encode_to_vec().into_boxed_slice());
        crm_sync_proto::view::decode_state(bytes).expect("a state prost wrote")
    });
    let view = |map: &'a crm_sync_workflow::Fields| -> Vec<FieldRef<'a>> {
        map.iter()
            .map(|(name, value)| (name.as_str(), ValueRef::of(value)))
            .collect()
    };
    merge(
        prior,
        event,
        (&view(&event.fields), &view(&event.previous_fields)),
    )
}

#[cfg(test)]
impl Merged<'_> {
    /// The merged state whole, as it is stored.
    pub(crate) fn whole(&self) -> RecordState {
        use crm_sync_proto::Message;
        RecordState::decode(self.encode().as_slice()).expect("a state just encoded")
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
