//! Reading a field's value as a condition's type: exact decimals, booleans, ISO 8601 or epoch
//! dates and date-times.

use std::borrow::Cow;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use crm_sync_proto::view::ValueRef;
use rust_decimal::Decimal;

use super::ValueType;
use super::text::trimmed;

/// A field value read as a condition's type.
pub(super) enum Typed<'a> {
    Text(Cow<'a, str>),
    Number(Decimal),
    Boolean(bool),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
}

/// Reads a field as `value_type`; None when it cannot be (a type mismatch).
pub(super) fn read(value: ValueRef<'_>, value_type: ValueType) -> Option<Typed<'_>> {
    match value_type {
        ValueType::Text => Some(Typed::Text(Cow::Borrowed(match value {
            ValueRef::Text(t) | ValueRef::Number(t) => t,
            ValueRef::Boolean(b) => {
                if b {
                    "true"
                } else {
                    "false"
                }
            }
            ValueRef::Null(_) | ValueRef::Unset => "",
        }))),
        ValueType::Number => read_number(value).map(Typed::Number),
        ValueType::Boolean => match value {
            ValueRef::Boolean(b) => Some(Typed::Boolean(b)),
            ValueRef::Text(t) => parse_bool(t).map(Typed::Boolean),
            _ => None,
        },
        ValueType::Date => read_datetime(value).map(|d| {
            Typed::Date(match d {
                When::Date(d) => d,
                When::Instant(t) => t.date_naive(),
            })
        }),
        ValueType::DateTime => read_datetime(value).map(|d| {
            Typed::DateTime(match d {
                When::Date(d) => d.and_time(chrono::NaiveTime::MIN).and_utc(),
                When::Instant(t) => t,
            })
        }),
    }
}

pub(super) fn parse_bool(text: &str) -> Option<bool> {
    let t = trimmed(text);
    if t.eq_ignore_ascii_case("true") {
        Some(true)
    } else if t.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

pub(crate) fn read_number(field: ValueRef<'_>) -> Option<Decimal> {
    match field {
        ValueRef::Number(n) | ValueRef::Text(n) => parse_decimal(n),
        _ => None,
    }
}

pub(super) fn parse_decimal(text: &str) -> Option<Decimal> {
    let t = trimmed(text);
    Decimal::from_str(t)
        .or_else(|_| Decimal::from_scientific(t))
        .ok()
}

pub(crate) fn read_text(field: ValueRef<'_>) -> String {
    match field {
        ValueRef::Text(t) | ValueRef::Number(t) => t.to_owned(),
        ValueRef::Boolean(b) => b.to_string(),
        ValueRef::Null(_) | ValueRef::Unset => String::new(),
    }
}

/// A date or an instant, as a field may carry either.
pub(crate) enum When {
    Date(NaiveDate),
    Instant(DateTime<Utc>),
}

fn read_datetime(value: ValueRef<'_>) -> Option<When> {
    match value {
        ValueRef::Text(t) | ValueRef::Number(t) => parse_when(t),
        _ => None,
    }
}

/// ISO 8601 date, date-time with offset (`Z`, `+01:00`, or Salesforce's `+0000`), date-time
/// without offset (taken as UTC), or Unix epoch milliseconds (as HubSpot sends dates).
pub(crate) fn parse_when(text: &str) -> Option<When> {
    let t = trimmed(text);
    if t.len() == 10 {
        return iso_date(t).map(When::Date);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(When::Instant(dt.with_timezone(&Utc)));
    }
    if let Ok(dt) = DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(When::Instant(dt.with_timezone(&Utc)));
    }
    if let Ok(dt) = NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(When::Instant(dt.and_utc()));
    }
    if !t.is_empty() && t.len() <= 15 && t.bytes().all(|b| b.is_ascii_digit()) {
        let millis: i64 = t.parse().ok()?;
        return DateTime::from_timestamp_millis(millis).map(When::Instant);
    }
    None
}

/// `YYYY-MM-DD`, without going through a format-string parser (dates are on the hot path).
pub(super) fn iso_date(t: &str) -> Option<NaiveDate> {
    let b = t.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let year = i32::try_from(number(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, number(5..7)?, number(8..10)?)
}
