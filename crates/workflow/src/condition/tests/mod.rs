use super::*;
use crm_sync_proto::v1::field_value::Kind;
use crm_sync_proto::v1::{ChangeType, CrmEvent};
use rust_decimal::Decimal;
use serde_json::json;

mod changes;
mod json;
mod operators;
mod properties;

fn fv(kind: Kind) -> FieldValue {
    FieldValue { kind: Some(kind) }
}

fn text(s: &str) -> Kind {
    Kind::Text(s.to_owned())
}

fn fields(pairs: &[(&str, Kind)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), fv(v.clone())))
        .collect()
}

fn cond(v: Value) -> Condition {
    Condition::from_json(&v).unwrap_or_else(|e| panic!("{v}: {e}"))
}

use Verdict::{Match as M, NoMatch as N, TypeMismatch as T, Unknown as U};

/// An Opportunity as Salesforce sends it (everything is text), plus a few typed values.
fn opportunity() -> Fields {
    fields(&[
        ("StageName", text("Closed Won")),
        ("Amount", text("1250.50")),
        ("Discount", Kind::Number("0.3".into())),
        ("IsWon", text("true")),
        ("IsPrivate", Kind::Boolean(false)),
        ("Name", text("Ærø Shipping - 200 licenses")),
        ("City", text("STRASSE")),
        ("Type", text("New Business")),
        ("CloseDate", text("2026-11-20")),
        ("LastActivity", text("2026-11-25T23:30:00.000-0500")),
        ("CreatedDate", text("2026-11-01T09:00:00.000Z")),
        ("HsCloseDate", Kind::Number("1763596800000".into())),
        ("Description", Kind::NullValue(true)),
        ("NextStep", text("   ")),
    ])
}
