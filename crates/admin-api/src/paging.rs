//! Pagination of every list: `limit` (1–[`MAX_LIMIT`], default [`DEFAULT_LIMIT`]) and an opaque
//! `cursor`, the previous page's `next_cursor`. Keyset cursors keep pages stable while rows are
//! added; the leaderboard, ranked by a changing total, pages by offset.

use chrono::{DateTime, Datelike, Utc};
use crm_sync_store::admin::{After, Keyed};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;
/// The deepest offset page: far beyond any real leaderboard, and `offset + limit` cannot
/// overflow.
const MAX_OFFSET: i64 = 1_000_000_000;

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

pub fn limit(limit: Option<u32>) -> Result<i64, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(i64::from(n)),
        n => Err(ApiError::invalid(
            "limit",
            format!("limit {n} is out of range: 1 to {MAX_LIMIT}"),
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    After(After),
    Offset(i64),
    Before(i64),
}

impl Cursor {
    pub fn encode(self) -> String {
        let text = match self {
            Cursor::After(a) => format!("k:{}:{}", a.created_at.timestamp_micros(), a.id),
            Cursor::Offset(n) => format!("o:{n}"),
            Cursor::Before(id) => format!("b:{id}"),
        };
        hex::encode(text)
    }

    /// The cursor, if `cursor` is one this service could have written: positions in the
    /// database's range only, so a crafted one is refused as such rather than by the database.
    pub fn decode(cursor: &str) -> Option<Cursor> {
        let decoded = Self::parse(cursor)?;
        let plausible = match decoded {
            Cursor::After(a) => (1..=9999).contains(&a.created_at.year()),
            Cursor::Offset(n) => n <= MAX_OFFSET,
            Cursor::Before(id) => id > 0,
        };
        plausible.then_some(decoded)
    }

    fn parse(cursor: &str) -> Option<Cursor> {
        if cursor.len() > 256 {
            return None;
        }
        let text = String::from_utf8(hex::decode(cursor).ok()?).ok()?;
        let (kind, rest) = text.split_once(':')?;
        match kind {
            "k" => {
                let (micros, id) = rest.split_once(':')?;
                Some(Cursor::After(After {
                    created_at: DateTime::<Utc>::from_timestamp_micros(micros.parse().ok()?)?,
                    id: Uuid::try_parse(id).ok()?,
                }))
            }
            "o" => rest.parse().ok().filter(|n| *n >= 0).map(Cursor::Offset),
            "b" => rest.parse().ok().map(Cursor::Before),
            _ => None,
        }
    }
}

/// A position in a list ordered by a time, ties broken by a text key (the record trail's events,
/// newest first, by event id; its dead letters by row id; CRM identities, oldest first, by
/// integration and CRM user id): the last row of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeKey {
    pub at: DateTime<Utc>,
    pub key: String,
}

impl TimeKey {
    pub fn encode(&self) -> String {
        hex::encode(format!("n:{}:{}", self.at.timestamp_micros(), self.key))
    }

    /// As [`Cursor::decode`]: only a position this service could have written.
    fn decode(cursor: &str) -> Option<TimeKey> {
        if cursor.len() > 1024 {
            return None;
        }
        let text = String::from_utf8(hex::decode(cursor).ok()?).ok()?;
        let (micros, key) = text.strip_prefix("n:")?.split_once(':')?;
        let at = DateTime::<Utc>::from_timestamp_micros(micros.parse().ok()?)?;
        let plausible = (1..=9999).contains(&at.year())
            && !key.is_empty()
            && !key.chars().any(char::is_control);
        plausible.then(|| TimeKey {
            at,
            key: key.to_owned(),
        })
    }
}

pub fn time_key(cursor: Option<&str>) -> Result<Option<TimeKey>, ApiError> {
    match cursor.map(TimeKey::decode) {
        None => Ok(None),
        Some(Some(n)) => Ok(Some(n)),
        Some(None) => Err(bad_cursor()),
    }
}

pub fn bad_cursor() -> ApiError {
    ApiError::invalid(
        "cursor",
        "not a cursor of this list: pass the previous page's next_cursor unchanged",
    )
}

pub fn after(cursor: Option<&str>) -> Result<Option<After>, ApiError> {
    match cursor.map(Cursor::decode) {
        None => Ok(None),
        Some(Some(Cursor::After(a))) => Ok(Some(a)),
        Some(_) => Err(bad_cursor()),
    }
}

pub fn offset(cursor: Option<&str>) -> Result<i64, ApiError> {
    match cursor.map(Cursor::decode) {
        None => Ok(0),
        Some(Some(Cursor::Offset(n))) => Ok(n),
        Some(_) => Err(bad_cursor()),
    }
}

pub fn before(cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
    match cursor.map(Cursor::decode) {
        None => Ok(None),
        Some(Some(Cursor::Before(id))) => Ok(Some(id)),
        Some(_) => Err(bad_cursor()),
    }
}

/// A keyset list's `limit` and `cursor` parameters, checked: the page size, and the position
/// after which the page starts.
pub fn keyset_args(
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<(i64, Option<After>), ApiError> {
    Ok((self::limit(limit)?, after(cursor)?))
}

/// A keyset page from `limit + 1` fetched rows: the extra row only says there is a next page.
pub fn keyset<R: Keyed, T>(mut rows: Vec<R>, limit: i64, view: impl Fn(R) -> T) -> Page<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|r| Cursor::After(r.position()).encode()))
        .flatten();
    Page {
        items: rows.into_iter().map(view).collect(),
        next_cursor,
    }
}

/// Cuts `limit + 1` fetched rows to the page; the extra row only says that a next page exists,
/// which starts after the page's last row.
pub fn time_key_page<R>(
    rows: &mut Vec<R>,
    limit: i64,
    position: impl Fn(&R) -> TimeKey,
) -> Option<String> {
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    more.then(|| rows.last().map(|r| position(r).encode()))
        .flatten()
}

/// An offset page from `limit + 1` fetched rows starting at `offset`.
pub fn offset_page<R, T>(
    mut rows: Vec<R>,
    offset: i64,
    limit: i64,
    view: impl Fn(R) -> T,
) -> Page<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Page {
        items: rows.into_iter().map(view).collect(),
        next_cursor: more.then(|| Cursor::Offset(offset + limit).encode()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let a = Cursor::After(After {
            created_at: DateTime::<Utc>::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
            id: Uuid::new_v4(),
        });
        for c in [a, Cursor::Offset(400), Cursor::Before(17)] {
            assert_eq!(Cursor::decode(&c.encode()), Some(c));
        }
        assert_eq!(Cursor::decode("zz"), None);
        assert_eq!(Cursor::decode(&hex::encode("o:-1")), None);
        for crafted in [
            "o:9223372036854775807",
            "b:-5",
            "k:-219952022400000000:00000000-0000-0000-0000-000000000000",
            "k:253402300800000000:00000000-0000-0000-0000-000000000000",
        ] {
            assert_eq!(Cursor::decode(&hex::encode(crafted)), None, "{crafted}");
        }
        assert!(after(Some(&Cursor::Offset(3).encode())).is_err());
        let n = TimeKey {
            at: DateTime::<Utc>::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
            key: "a:b".into(),
        };
        assert_eq!(time_key(Some(&n.encode())).unwrap(), Some(n));
        assert!(time_key(Some(&Cursor::Offset(3).encode())).is_err());
        assert!(time_key(Some(&hex::encode("n:253402300800000000:x"))).is_err());
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(MAX_LIMIT + 1)).is_err());
        assert_eq!(limit(None).unwrap(), 50);
    }
}
