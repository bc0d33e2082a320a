use super::*;

#[test]
fn invalid_conditions_point_at_the_offending_part() {
    let cases = [
        (
            json!({"all": [{"field": "A", "op": "like", "value": "x"}]}),
            "conditions/all/0/op: unknown operator `like`",
        ),
        (
            json!({"field": "A", "op": "gt", "value": "x"}),
            "conditions/value:",
        ),
        (json!({"any": []}), "conditions/any:"),
        (
            json!({"field": "", "op": "eq", "value": 1}),
            "conditions/field:",
        ),
        (
            json!({"field": "A", "op": "eq"}),
            "conditions: missing `value`",
        ),
        (
            json!({"not": {"field": "A", "op": "eq", "value": 1, "extra": 1}}),
            "conditions/not/extra: unknown key",
        ),
        (json!([1]), "conditions: expected an object"),
        // A number compared with a date literal, and other type clashes.
        (
            json!({"field": "CloseDate", "op": "gt", "value": 5, "type": "date"}),
            "conditions/value: expected a date literal, got a number",
        ),
        (
            json!({"field": "CloseDate", "op": "gt", "value": "2026-13-45", "type": "date"}),
            "conditions/value: expected a date YYYY-MM-DD",
        ),
        (
            json!({"field": "At", "op": "gt", "value": "2026-11-20T10:00:00", "type": "datetime"}),
            "conditions/value: expected an ISO 8601 date-time with a time zone",
        ),
        (
            json!({"field": "A", "op": "eq", "value": "x", "type": "money"}),
            "conditions/type: unknown type `money`",
        ),
        (
            json!({"field": "A", "op": "gt", "value": true}),
            "conditions/value: operator `gt` compares numbers and dates",
        ),
        (
            json!({"field": "A", "op": "contains", "value": 3}),
            "conditions/value: `contains` compares text",
        ),
        (
            json!({"field": "A", "op": "starts_with", "value": ""}),
            "conditions/value: `starts_with` needs non-empty text",
        ),
        // An empty `in` list, mixed lists, and lists where a list is needed.
        (
            json!({"all": [{"field": "A", "op": "in", "value": []}]}),
            "conditions/all/0/value: an `in` list needs at least one value",
        ),
        (
            json!({"field": "A", "op": "in", "value": ["a", 2]}),
            "conditions/value/1: every value of a list has the same type: expected text, got number",
        ),
        (
            json!({"field": "A", "op": "in", "value": [1, "a"]}),
            "conditions/value/1: every value of a list has the same type: expected number, got text",
        ),
        (
            json!({"field": "A", "op": "not_in", "value": "a"}),
            "conditions/value: `not_in` takes a list",
        ),
        (
            json!({"field": "A", "op": "in", "value": ["a", null]}),
            "conditions/value/1: null cannot be listed",
        ),
        (
            json!({"field": "A", "op": "is_empty", "value": 1}),
            "conditions/value: `is_empty` takes no value",
        ),
        (
            json!({"field": "A", "op": "changed_to", "value": null}),
            "conditions/value: `changed_to` needs a value",
        ),
        (
            json!({"field": "A", "op": "eq", "value": {"x": 1}}),
            "conditions/value: expected a text, number or boolean literal, got an object",
        ),
        (
            json!({"field": "A", "op": "eq", "value": 1, "case_sensitive": "yes"}),
            "conditions/case_sensitive:",
        ),
    ];
    for (c, expected) in cases {
        let e = Condition::from_json(&c).unwrap_err().to_string();
        assert!(e.starts_with(expected), "{c} -> {e}");
    }
}

#[test]
fn json_round_trips_as_written() {
    let c = json!({"all": [
        {"field": "StageName", "op": "eq", "value": "Closed Won", "case_sensitive": true},
        {"not": {"field": "Amount", "op": "lt", "value": 1000.25}},
        {"any": [{"field": "X", "op": "eq", "value": null}, {"field": "Y", "op": "ne", "value": false}]},
        {"field": "Amount", "op": "gte", "value": "1000.50", "type": "number"},
        {"field": "CloseDate", "op": "gte", "value": "2026-01-01"},
        {"field": "Type", "op": "in", "value": ["New Business", "Upsell"]},
        {"field": "StageName", "op": "changed_to", "value": "Closed Won"},
        {"field": "Amount", "op": "changed", "type": "number"},
        {"field": "Description", "op": "is_empty"}
    ]});
    let parsed = cond(c.clone());
    assert_eq!(parsed.to_json(), c);
    assert_eq!(Condition::from_json(&parsed.to_json()).unwrap(), parsed);
    assert_eq!(parsed.leaf_count(), 10);
    assert!(parsed.uses_changes());
}

#[test]
fn conditions_stored_before_typed_literals_still_parse_the_same() {
    // The forms the first version wrote: groups, eq/ne/gt/gte/lt/lte, number/text/bool/null.
    let stored = json!({"all": [
        {"field": "StageName", "op": "eq", "value": "Closed Won"},
        {"field": "Amount", "op": "gte", "value": 1000},
        {"field": "IsWon", "op": "ne", "value": false},
        {"field": "Lost", "op": "eq", "value": null}
    ]});
    let c = cond(stored.clone());
    assert_eq!(c.to_json(), stored);
    let r = fields(&[
        ("StageName", text("closed won")),
        ("Amount", text("1000.00")),
        ("IsWon", text("true")),
    ]);
    assert_eq!(c.evaluate(&r), M);
}

#[test]
fn the_readme_examples_are_valid_conditions() {
    let readme = include_str!("../../../../../README.md");
    let start = readme.find("## Workflows").unwrap();
    let end = start
        + readme[start..]
            .find("\n## ")
            .unwrap_or(readme.len() - start);
    let section = &readme[start..end];
    let blocks: Vec<&str> = section
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert!(blocks.len() >= 4, "{blocks:?}");
    for block in blocks {
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(block).unwrap();
        let conditions: Value = serde_json::to_value(&doc["conditions"]).unwrap();
        Condition::from_json(&conditions).unwrap_or_else(|e| panic!("{block}: {e}"));
    }
}
