use super::*;

fn event(change: ChangeType, now: &[(&str, Kind)], before: &[(&str, Kind)]) -> CrmEvent {
    let mut e = CrmEvent {
        fields: fields(now),
        previous_fields: fields(before),
        ..Default::default()
    };
    e.set_change_type(change);
    e
}

fn on_event(c: &Value, e: &CrmEvent, mode: Mode) -> Verdict {
    cond(c.clone()).evaluate_record(&Record::of_event(e), mode)
}

#[test]
fn changes_use_previous_values() {
    use ChangeType::{Created, Deleted, Updated};
    let changed = json!({"field": "StageName", "op": "changed"});
    let to_won = json!({"field": "StageName", "op": "changed_to", "value": "Closed Won"});
    let from_neg = json!({"field": "StageName", "op": "changed_from", "value": "Negotiation"});
    let amount_changed = json!({"field": "Amount", "op": "changed", "type": "number"});
    let won = text("Closed Won");
    let cases: Vec<(&Value, CrmEvent, Verdict)> = vec![
        // The previous value was sent and differs.
        (
            &changed,
            event(
                Updated,
                &[("StageName", won.clone())],
                &[("StageName", text("Negotiation"))],
            ),
            M,
        ),
        (
            &to_won,
            event(
                Updated,
                &[("StageName", won.clone())],
                &[("StageName", text("Negotiation"))],
            ),
            M,
        ),
        (
            &from_neg,
            event(
                Updated,
                &[("StageName", won.clone())],
                &[("StageName", text("Negotiation"))],
            ),
            M,
        ),
        (
            &from_neg,
            event(
                Updated,
                &[("StageName", won.clone())],
                &[("StageName", text("Prospecting"))],
            ),
            N,
        ),
        // Sent but equal (ignoring case, as text comparison does): not a change.
        (
            &changed,
            event(
                Updated,
                &[("StageName", won.clone())],
                &[("StageName", text("closed won"))],
            ),
            N,
        ),
        (
            &to_won,
            event(
                Updated,
                &[("StageName", won.clone())],
                &[("StageName", won.clone())],
            ),
            N,
        ),
        // Not sent: unknown, unless the current value already rules it out.
        (
            &changed,
            event(Updated, &[("StageName", won.clone())], &[]),
            U,
        ),
        (
            &to_won,
            event(
                Updated,
                &[("StageName", won.clone())],
                &[("Amount", text("1"))],
            ),
            U,
        ),
        (
            &to_won,
            event(Updated, &[("StageName", text("Prospecting"))], &[]),
            N,
        ),
        // Changed from empty, and to empty.
        (
            &to_won,
            event(
                Updated,
                &[("StageName", won.clone())],
                &[("StageName", Kind::NullValue(true))],
            ),
            M,
        ),
        (
            &changed,
            event(
                Updated,
                &[("StageName", Kind::NullValue(true))],
                &[("StageName", won.clone())],
            ),
            M,
        ),
        // Typed: 1000 and 1000.00 are the same amount.
        (
            &amount_changed,
            event(
                Updated,
                &[("Amount", text("1000.00"))],
                &[("Amount", text("1000"))],
            ),
            N,
        ),
        (
            &amount_changed,
            event(
                Updated,
                &[("Amount", text("1000.01"))],
                &[("Amount", text("1000"))],
            ),
            M,
        ),
        (
            &amount_changed,
            event(
                Updated,
                &[("Amount", text("lots"))],
                &[("Amount", text("1000"))],
            ),
            T,
        ),
        // A created record changed every field it has from nothing.
        (
            &changed,
            event(Created, &[("StageName", won.clone())], &[]),
            M,
        ),
        (
            &to_won,
            event(Created, &[("StageName", won.clone())], &[]),
            M,
        ),
        (
            &from_neg,
            event(Created, &[("StageName", won.clone())], &[]),
            N,
        ),
        (&changed, event(Created, &[], &[]), U),
        // A delete knows nothing of changes.
        (
            &changed,
            event(Deleted, &[("StageName", won.clone())], &[]),
            U,
        ),
    ];
    for (c, e, expected) in cases {
        assert_eq!(on_event(c, &e, Mode::Full), expected, "{c} on {e:?}");
    }
}

#[test]
fn the_state_of_a_change_condition_ignores_the_change() {
    let to_won_big = json!({"all": [
        {"field": "StageName", "op": "changed_to", "value": "Closed Won"},
        {"field": "Amount", "op": "gte", "value": 1000}
    ]});
    // Amount edited on a won deal: not a new win, but still won and big (no retraction).
    let edit = event(
        ChangeType::Updated,
        &[("StageName", text("Closed Won")), ("Amount", text("2000"))],
        &[("Amount", text("1500"))],
    );
    // The stage's previous value was not sent: whether it changed is unknown.
    assert_eq!(on_event(&to_won_big, &edit, Mode::Full), U);
    assert_eq!(on_event(&to_won_big, &edit, Mode::State), U);
    // Sent unchanged: definitely not a change, while the state still holds.
    let resent = event(
        ChangeType::Updated,
        &[("StageName", text("Closed Won")), ("Amount", text("2000"))],
        &[("StageName", text("Closed Won")), ("Amount", text("1500"))],
    );
    assert_eq!(on_event(&to_won_big, &resent, Mode::Full), N);
    assert_eq!(on_event(&to_won_big, &resent, Mode::State), U);
    // Stage moved back: definitely no longer satisfied.
    let back = event(
        ChangeType::Updated,
        &[("StageName", text("Negotiation")), ("Amount", text("2000"))],
        &[("StageName", text("Closed Won"))],
    );
    assert_eq!(on_event(&to_won_big, &back, Mode::State), N);
    // Amount dropped below the threshold: no longer satisfied either.
    let small = event(
        ChangeType::Updated,
        &[("StageName", text("Closed Won")), ("Amount", text("10"))],
        &[("Amount", text("2000"))],
    );
    assert_eq!(on_event(&to_won_big, &small, Mode::State), N);
}
