use super::merge_event as merge;
use super::*;
use crm_sync_proto::v1::FieldValue;
use crm_sync_proto::v1::field_value::Kind;

fn text(s: &str) -> FieldValue {
    FieldValue {
        kind: Some(Kind::Text(s.to_owned())),
    }
}

fn event(id: &str, change: ChangeType, at: i64, fields: &[(&str, &str)]) -> CrmEvent {
    let mut e = CrmEvent {
        event_id: id.to_owned(),
        integration_id: "i".into(),
        object_type: "deal".into(),
        record_id: "1".into(),
        occurred_at: Some(Timestamp {
            seconds: at,
            nanos: 0,
        }),
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), text(v)))
            .collect(),
        ..Default::default()
    };
    e.set_change_type(change);
    e
}

/// What the merged record's field was before the event.
fn before(merged: &Merged<'_>, name: &str) -> Option<FieldValue> {
    let current = Current::new(&merged.fields, &merged.changes);
    let before = Before(&current);
    before.get(name).map(ValueRef::to_value)
}

fn value(state: &RecordState, field: &str) -> Option<String> {
    match state.fields.get(field)?.value.as_ref()?.kind.as_ref()? {
        Kind::Text(t) => Some(t.clone()),
        _ => None,
    }
}

#[test]
fn deltas_accumulate_into_the_whole_record() {
    let first_event = event("1", ChangeType::Updated, 10, &[("amount", "500")]);
    let first = merge(None, &first_event);
    assert!(first.new_record && first.changed && first.dirty);
    let second_event = event("2", ChangeType::Updated, 20, &[("dealstage", "closedwon")]);
    let second = merge(Some(first.whole()), &second_event);
    assert!(second.changed);
    assert_eq!(value(&second.whole(), "amount").as_deref(), Some("500"));
    assert_eq!(
        value(&second.whole(), "dealstage").as_deref(),
        Some("closedwon")
    );
    // The amount was not touched: its previous value is its current one.
    assert_eq!(before(&second, "amount"), Some(text("500")));
    // The stage was never seen and the event sent no previous value: unknown.
    assert_eq!(before(&second, "dealstage"), None);
}

#[test]
fn the_stored_value_is_the_previous_value_of_a_field_the_event_changes() {
    let first_event = event("1", ChangeType::Updated, 10, &[("stage", "open")]);
    let first = merge(None, &first_event);
    let second_event = event("2", ChangeType::Updated, 20, &[("stage", "won")]);
    let second = merge(Some(first.whole()), &second_event);
    assert_eq!(before(&second, "stage"), Some(text("open")));
    // Where the event sends its own previous value, that one is used.
    let mut third = event("3", ChangeType::Updated, 30, &[("stage", "lost")]);
    third
        .previous_fields
        .insert("stage".into(), text("negotiation"));
    let third = merge(Some(second.whole()), &third);
    assert_eq!(before(&third, "stage"), Some(text("negotiation")));
}

#[test]
fn an_older_event_never_moves_a_field_back() {
    let newer_event = event("2", ChangeType::Updated, 20, &[("stage", "won")]);
    let newer = merge(None, &newer_event);
    let older_event = event(
        "1",
        ChangeType::Updated,
        10,
        &[("stage", "open"), ("amount", "7")],
    );
    let older = merge(Some(newer.whole()), &older_event);
    assert_eq!(value(&older.whole(), "stage").as_deref(), Some("won"));
    // A field only the older event knows is still news.
    assert_eq!(value(&older.whole(), "amount").as_deref(), Some("7"));
    assert!(older.changed);
}

#[test]
fn a_replayed_event_changes_nothing() {
    let e = event("1", ChangeType::Updated, 10, &[("stage", "won")]);
    let once = merge(None, &e);
    let again = merge(Some(once.whole()), &e);
    assert!(!again.dirty && !again.changed);
    assert_eq!(again.whole(), once.whole());
}

#[test]
fn a_newer_identical_value_is_stored_but_changes_no_decision() {
    let once_event = event("1", ChangeType::Updated, 10, &[("stage", "won")]);
    let once = merge(None, &once_event);
    let later_event = event("2", ChangeType::Updated, 20, &[("stage", "won")]);
    let later = merge(Some(once.whole()), &later_event);
    assert!(later.dirty && !later.changed);
}

#[test]
fn a_created_record_had_empty_fields_before() {
    let created_event = event("1", ChangeType::Created, 10, &[("stage", "won")]);
    let created = merge(None, &created_event);
    assert_eq!(before(&created, "stage"), Some(NULL.to_value()));
}

#[test]
fn deletes_stick_against_older_updates_and_yield_to_newer_ones() {
    let live_event = event("1", ChangeType::Updated, 10, &[("stage", "won")]);
    let live = merge(None, &live_event);
    let deleted_event = event("2", ChangeType::Deleted, 20, &[]);
    let deleted = merge(Some(live.whole()), &deleted_event);
    assert!(deleted.state.deleted && deleted.changed);
    let late_event = event("0", ChangeType::Updated, 15, &[("stage", "lost")]);
    let late = merge(Some(deleted.whole()), &late_event);
    // The record stays deleted; the field itself was set at 10, so the update at 15 is newer.
    assert!(late.state.deleted);
    assert_eq!(value(&late.whole(), "stage").as_deref(), Some("lost"));
    let undeleted_event = event("3", ChangeType::Updated, 30, &[("stage", "won")]);
    let undeleted = merge(Some(late.whole()), &undeleted_event);
    assert!(!undeleted.state.deleted && undeleted.changed);
}

#[test]
fn the_owner_follows_the_newest_event_that_names_one() {
    let mut e = event("1", ChangeType::Updated, 10, &[]);
    e.owner = Some(CrmUser {
        crm_user_id: "u1".into(),
        name: "Ann".into(),
        email: String::new(),
    });
    let first = merge(None, &e);
    let mut older = event("0", ChangeType::Updated, 5, &[]);
    older.owner = Some(CrmUser {
        crm_user_id: "u0".into(),
        ..Default::default()
    });
    let kept = merge(Some(first.whole()), &older);
    assert_eq!(
        kept.state.owner.as_ref().map(|o| o.crm_user_id.as_str()),
        Some("u1")
    );
    assert_eq!(
        kept.state.owner.as_ref().map(|o| o.name.as_str()),
        Some("Ann")
    );
}

#[test]
fn a_full_snapshot_completes_the_record() {
    let mut e = event("1", ChangeType::Updated, 10, &[("stage", "won")]);
    e.full_snapshot = true;
    let merged = merge(None, &e);
    assert!(merged.state.complete);
}

/// A pull selects only the fields the workflows read when it ran: the fields it carried are
/// known (a requested field without a value comes as an explicit null), the others are not.
#[test]
fn a_pulled_record_knows_the_fields_its_pull_carried_and_no_others() {
    let mut pulled = event("1", ChangeType::Updated, 10, &[("stage", "open")]);
    pulled.full_snapshot = true;
    pulled.fields.insert(
        "amount".into(),
        FieldValue {
            kind: Some(Kind::NullValue(true)),
        },
    );
    let pulled = merge(None, &pulled);
    assert!(pulled.state.complete);
    let current = Current::new(&pulled.fields, &pulled.changes);
    assert_eq!(current.get("stage"), Some(ValueRef::Text("open")));
    assert_eq!(current.get("amount"), Some(NULL), "a pulled null is empty");
    assert_eq!(
        current.get("region"),
        None,
        "a field the pull did not select read as empty"
    );
}

/// An Outbound Message sends no previous values: a value the record never showed may well have
/// been the same before, so it is no change from empty.
#[test]
fn a_value_first_seen_after_a_pull_that_did_not_select_it_was_unknown_before() {
    let mut pulled = event("1", ChangeType::Updated, 10, &[("stage", "open")]);
    pulled.full_snapshot = true;
    let pulled = merge(None, &pulled);
    let message = event(
        "2",
        ChangeType::Updated,
        20,
        &[("stage", "open"), ("region", "EMEA")],
    );
    let merged = merge(Some(pulled.whole()), &message);
    assert_eq!(
        before(&merged, "region"),
        None,
        "an unchanged region would count as changed to EMEA"
    );
    assert_eq!(before(&merged, "stage"), Some(text("open")));
    // Another pull that did select it: still unknown before, now known.
    let mut again = event("3", ChangeType::Updated, 30, &[("region", "EMEA")]);
    again.full_snapshot = true;
    let again = merge(Some(pulled.whole()), &again);
    assert_eq!(before(&again, "region"), None);
}

/// A pulled snapshot of a deleted record that raced a newer update: the record lives on. The
/// snapshot still changes what workflows see (here: the record became complete), so it is
/// judged, as an update.
#[test]
fn a_delete_older_than_the_record_is_not_judged_as_its_delete() {
    let live_event = event("1", ChangeType::Updated, 20, &[("stage", "won")]);
    let live = merge(None, &live_event);
    let mut late = event("2", ChangeType::Deleted, 10, &[("stage", "won")]);
    late.full_snapshot = true;
    let merged = merge(Some(live.whole()), &late);
    assert!(!merged.state.deleted && !merged.deleted_now && merged.changed);
    assert_eq!(merged.judged_as(&late), Some(ChangeType::Updated));

    let newer = event("3", ChangeType::Deleted, 30, &[]);
    let deleted = merge(Some(live.whole()), &newer);
    assert!(deleted.deleted_now);
    assert_eq!(deleted.judged_as(&newer), Some(ChangeType::Deleted));
    // Deleted already: another delete, or an older update, is not judged.
    let again_event = event("4", ChangeType::Deleted, 40, &[]);
    let again = merge(Some(deleted.whole()), &again_event);
    assert_eq!(again.judged_as(&again_event), None);
}

/// A change whose fields the CRM left out (a CDC gap event) is fetched whole; the snapshot,
/// stamped with the record's modification time a little before the change's commit, must still
/// count as news, its owner included.
#[test]
fn an_event_without_its_fields_does_not_make_the_snapshot_fetched_for_it_older() {
    let known_event = event("1", ChangeType::Updated, 10, &[("stage", "open")]);
    let known = merge(None, &known_event);
    let mut gap = event("2", ChangeType::Updated, 30, &[]);
    gap.fields_omitted = true;
    let gapped = merge(Some(known.whole()), &gap);
    let mut snapshot = event("3", ChangeType::Updated, 29, &[("stage", "won")]);
    snapshot.full_snapshot = true;
    snapshot.owner = Some(CrmUser {
        crm_user_id: "u2".into(),
        ..Default::default()
    });
    let fetched = merge(Some(gapped.whole()), &snapshot);
    assert_eq!(value(&fetched.whole(), "stage").as_deref(), Some("won"));
    assert_eq!(
        fetched.state.owner.as_ref().map(|o| o.crm_user_id.as_str()),
        Some("u2"),
        "the new owner was taken for an older one"
    );
}
