//! The provisioner's queries: what applying a batch of workflow outcomes reads and writes.
//!
//! Batch-wide statements take arrays (one round trip for the whole batch, whatever its size)
//! and are shaped so that PostgreSQL reaches every row through its unique index whatever the
//! table's statistics: the keys are unnested and each is looked up in a `LATERAL` subquery (a
//! nested loop of index probes), and the statements are not prepared, so each execution is
//! planned for its own arrays rather than reusing a generic plan made when the table was
//! empty (a full scan that a growing table would keep).

pub mod activities;
pub mod claims;
pub mod identities;
pub mod users;
pub mod workflows;
