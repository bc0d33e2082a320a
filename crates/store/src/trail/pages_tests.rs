#![allow(clippy::unwrap_used)]

use super::*;
use crate::trail::Verdict;

fn event(integration: u128, i: usize) -> NewEvent {
    NewEvent {
        integration_id: Uuid::from_u128(integration),
        company_id: Uuid::from_u128(1),
        event_id: format!("evt-{i}"),
        object_type: "Opportunity".into(),
        record_id: format!("006-{}", i % 3),
        change_type: "updated",
        source_change_type: "StageChanged".into(),
        source: "webhook",
        crm: "salesforce",
        delivery_id: format!("d-{i}"),
        occurred_at: i
            .is_multiple_of(2)
            .then(|| DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap()),
        received_at: None,
        judged_at: DateTime::from_timestamp_micros(1_800_000_000_000_000 + i as i64).unwrap(),
        summary: if i.is_multiple_of(2) {
            "matched"
        } else {
            "no_match"
        },
        verdicts: vec![
            Verdict {
                version: Uuid::from_u128(70 + (i % 2) as u128),
                decision: "not_counted",
                reason: Some("conditions"),
            },
            Verdict {
                version: Uuid::from_u128(80),
                decision: "counted",
                reason: None,
            },
        ],
        read_values: (i % 2 == 1).then(|| vec![1, 2, 3]),
    }
}

#[test]
fn entries_come_back_from_their_page_as_written() {
    let events: Vec<_> = (0..5).map(|i| event(2, i)).collect();
    let pages = encode(&events);
    assert_eq!(pages.len(), 1, "one integration, a few entries: one page");
    let back = decode(&pages[0]).unwrap();
    assert_eq!(back.len(), 5);
    for (e, b) in events.iter().zip(&back) {
        assert_eq!(b.event_id, e.event_id);
        assert_eq!(b.record_id, e.record_id);
        assert_eq!(b.change_type, "updated");
        assert_eq!(b.source_change_type, "StageChanged");
        assert_eq!(
            (b.source.as_str(), b.crm.as_str()),
            ("webhook", "salesforce")
        );
        assert_eq!(b.delivery_id, e.delivery_id);
        assert_eq!(b.occurred_at, e.occurred_at);
        assert_eq!(b.received_at, None);
        assert_eq!(b.judged_at, e.judged_at);
        assert_eq!(b.summary, e.summary);
        assert_eq!(b.read_values, e.read_values);
    }
    assert_eq!(
        back[1].decisions,
        json!([{"v": Uuid::from_u128(71), "d": "not_counted", "r": "conditions"},
               {"v": Uuid::from_u128(80), "d": "counted"}])
    );
}

#[test]
fn pages_hold_one_integration_and_a_bounded_number_of_entries() {
    let events: Vec<_> = (0..PAGE_ENTRIES + 10)
        .map(|i| event(2, i))
        .chain((0..3).map(|i| event(3, i)))
        .collect();
    let staged = staged(&events);
    let pages = paginate(&staged, version_by_position);
    let mut sizes: Vec<_> = pages
        .iter()
        .map(|p| (p.integration_id, p.count, p.matched))
        .collect();
    sizes.sort();
    assert_eq!(
        sizes,
        [
            (Uuid::from_u128(2), 10, 5),
            (Uuid::from_u128(2), PAGE_ENTRIES, PAGE_ENTRIES as i32 / 2),
            (Uuid::from_u128(3), 3, 2),
        ]
    );
    let first = pages.iter().find(|p| p.count == PAGE_ENTRIES).unwrap();
    let (from, to) = first.span();
    assert_eq!(
        (from, to),
        (events[0].judged_at, events[PAGE_ENTRIES - 1].judged_at)
    );
}

#[test]
fn a_damaged_page_reads_as_nothing_instead_of_failing() {
    let page = encode(&[event(2, 1), event(2, 2)]).pop().unwrap();
    for len in 0..page.len() {
        assert!(decode(&page[..len]).is_none(), "cut at {len}");
    }
    let mut other_format = page.clone();
    other_format[0] = 9;
    assert!(decode(&other_format).is_none());
}

#[test]
fn a_replayed_event_is_shown_once() {
    let pages = encode(&[event(2, 1), event(2, 2), event(2, 1)]);
    let mut seen = HashSet::new();
    let entries = entries(vec![(1, pages[0].clone())], |_| true, &mut seen);
    assert_eq!(
        entries
            .iter()
            .map(|e| e.event_id.as_str())
            .collect::<Vec<_>>(),
        ["evt-1", "evt-2"]
    );
}

/// A page as the writer made it before the codes (the first format): the summary, decisions
/// and reasons as strings.
fn first_format_page() -> Vec<u8> {
    use crate::trail::entry::{put_bytes, put_str};
    let mut b = vec![1u8];
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(Uuid::from_u128(70).as_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    for s in [
        "evt-1",
        "Opportunity",
        "006-1",
        "updated",
        "StageChanged",
        "webhook",
        "salesforce",
        "d-1",
    ] {
        put_str(&mut b, s);
    }
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&1_800_000_000_000_000i64.to_le_bytes());
    put_str(&mut b, "no_match");
    b.push(1);
    b.extend_from_slice(&0u16.to_le_bytes());
    put_str(&mut b, "not_counted");
    put_str(&mut b, "conditions");
    put_bytes(&mut b, &[1, 2, 3]);
    b
}

#[test]
fn pages_written_before_the_codes_are_still_read() {
    let back = decode(&first_format_page()).unwrap();
    assert_eq!(back.len(), 1);
    let e = &back[0];
    assert_eq!(
        (e.event_id.as_str(), e.record_id.as_str()),
        ("evt-1", "006-1")
    );
    assert_eq!(e.summary, "no_match");
    assert_eq!(
        e.decisions,
        json!([{"v": Uuid::from_u128(70), "d": "not_counted", "r": "conditions"}])
    );
    assert_eq!(e.read_values.as_deref(), Some(&[1u8, 2, 3][..]));
}

#[test]
fn a_summary_or_reason_without_a_code_is_kept_as_written() {
    let mut e = event(2, 1);
    e.summary = "a_new_summary";
    e.verdicts[0].reason = Some("a_new_reason");
    let back = decode(&encode(&[e])[0]).unwrap();
    assert_eq!(back[0].summary, "a_new_summary");
    assert_eq!(
        back[0].decisions,
        json!([{"v": Uuid::from_u128(71), "d": "not_counted", "r": "a_new_reason"},
               {"v": Uuid::from_u128(80), "d": "counted"}])
    );
}
