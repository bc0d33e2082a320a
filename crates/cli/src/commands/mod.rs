//! One module per subcommand.

pub mod admin;
pub mod apply;
mod apply_summary;
pub mod backfill;
pub mod consume;
pub mod demo;
pub mod demo_hubspot;
pub mod demo_leaderboard;
pub mod dlq;
pub mod migrate;
pub mod produce;
pub mod trail;
