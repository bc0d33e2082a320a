//! Telling a value PostgreSQL refuses apart from a database that is away: the first can never
//! succeed, however often it is retried, so consumers dead-letter it and API handlers answer 4xx;
//! only the second is worth retrying.

/// Why PostgreSQL refused a value for good, if `error` says so: a data exception (SQLSTATE class
/// 22: out-of-range dates, invalid encodings such as NUL, bad numbers), an integrity violation
/// (class 23) other than a unique violation, or a program limit (class 54: an index row or a
/// statement too large). A unique violation is left out: the consumers resolve concurrent inserts
/// of the same row by retrying (the retry finds the row). Everything else (connection loss,
/// serialization failures, deadlocks, lock timeouts, the server shutting down or out of
/// resources, schema not migrated yet) may succeed later.
pub fn refused_value(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code()?;
            let refused = match code.get(..2) {
                Some("22" | "54") => true,
                Some("23") => code != "23505",
                _ => false,
            };
            refused.then(|| format!("SQLSTATE {code}: {}", db.message()))
        }
        // The value could not even be encoded for, or decoded from, the wire: the same value
        // fails the same way every time.
        sqlx::Error::Encode(e) => Some(format!("value not encodable: {e}")),
        sqlx::Error::Decode(e) | sqlx::Error::ColumnDecode { source: e, .. } => {
            Some(format!("value not decodable: {e}"))
        }
        _ => None,
    }
}

/// PostgreSQL is there but could not serve the statement now: a lock held elsewhere for longer
/// than `database.lock_timeout_ms` (55P03), a cancelled statement (57014), a serialization
/// failure (40001) or a deadlock (40P01). The same statement succeeds later.
pub fn busy(error: &sqlx::Error) -> bool {
    let code = error.as_database_error().and_then(|e| e.code());
    code.is_some_and(|c| matches!(c.as_ref(), "55P03" | "57014" | "40001" | "40P01"))
}
