//! The end-to-end suites, one module per suite, in one test binary: each binary links the whole
//! kit and its dependencies, so one binary builds and links once instead of once per suite.
//! Run one suite with a module filter, e.g.
//! `cargo test -p crm-sync-e2e --test suites pipeline::`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_api;
mod admin_browser;
mod admin_credentials;
mod admin_pipeline;
mod admin_support;
mod admin_tokens;
mod cli;
mod connectors;
mod connectors_directory;
mod connectors_dynamics;
mod connectors_generic;
mod connectors_hubspot;
mod connectors_pipedrive;
mod connectors_salesforce_cdc;
mod consume_partitions;
mod database_trouble;
mod delivery;
mod email_linking;
mod hardening_http;
mod hardening_input;
mod ingest_salesforce;
mod listeners;
mod observability;
mod pipeline;
mod provisioner_locks;
mod provisioner_plans;
mod pull;
mod record_state;
mod secure;
mod workflows;
mod workflows_transactions;
