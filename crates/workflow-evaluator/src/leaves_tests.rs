#![allow(clippy::unwrap_used)]

use std::cell::Cell;

use crm_sync_workflow::{Condition, Record};
use serde_json::json;

use super::*;

fn leaves(condition: &Condition) -> Vec<&Comparison> {
    let mut out = Vec::new();
    condition.for_each_leaf(&mut |leaf| out.push(leaf));
    out
}

#[test]
fn a_shared_leaf_is_evaluated_once_per_record_and_mode_an_unshared_one_each_time() {
    let a = Condition::from_json(&json!({"all": [
        {"field": "Stage", "op": "eq", "value": "Won"},
        {"field": "Amount", "op": "gte", "value": 10}
    ]}))
    .unwrap();
    let b = Condition::from_json(&json!({"all": [
        {"field": "Stage", "op": "eq", "value": "Won"},
        {"field": "Amount", "op": "gte", "value": 20}
    ]}))
    .unwrap();
    let (a_leaves, b_leaves) = (leaves(&a), leaves(&b));
    let shared = SharedLeaves::new(a_leaves.iter().chain(&b_leaves).copied());
    let evaluations = Cell::new(0);
    let evaluate = || {
        evaluations.set(evaluations.get() + 1);
        Verdict::Match
    };
    let mut memo = shared.for_one_record();
    for leaf in a_leaves.iter().chain(&b_leaves) {
        assert_eq!(memo.verdict(leaf, Mode::Full, evaluate), Verdict::Match);
    }
    // "Stage is Won" once for both workflows, each Amount leaf on its own.
    assert_eq!(evaluations.get(), 3);
    memo.verdict(b_leaves[0], Mode::State, evaluate);
    assert_eq!(evaluations.get(), 4, "the other mode is another verdict");
    let mut next = shared.for_one_record();
    next.verdict(b_leaves[0], Mode::Full, evaluate);
    assert_eq!(evaluations.get(), 5, "another record is judged anew");
}

#[test]
fn remembered_verdicts_are_the_ones_evaluated() {
    let won = Condition::from_json(&json!({"field": "Stage", "op": "eq", "value": "Won"})).unwrap();
    let twice = Condition::from_json(&json!({"any": [
        {"field": "Stage", "op": "eq", "value": "Won"},
        {"field": "Stage", "op": "eq", "value": "Won"}
    ]}))
    .unwrap();
    let shared = SharedLeaves::new(leaves(&won).into_iter().chain(leaves(&twice)));
    for (stage, verdict) in [("Won", Verdict::Match), ("Lost", Verdict::NoMatch)] {
        let fields = crate::judge::tests::fields(&[("Stage", stage)]);
        let record = Record::of_fields(&fields);
        let mut memo = shared.for_one_record();
        for condition in [&won, &twice, &won] {
            assert_eq!(
                condition.evaluate_with(&record, Mode::Full, &mut memo),
                verdict
            );
            assert_eq!(condition.evaluate_record(&record, Mode::Full), verdict);
        }
    }
}
