//! ingest: CRM webhooks in, `CrmEvent`s onto Kafka. A webhook is answered with success only after
//! Kafka acknowledged every event it produced, so the CRM retries anything not durably stored.
//!
//! One module per CRM parses its format and maps it to `CrmEvent`s; [`http`] has one route per
//! format (`http/<crm>.rs`) around a shared request flow (`http/pipeline.rs`):
//! - [`salesforce`]: Outbound Messages (SOAP) and Change Data Capture events;
//! - [`hubspot`]: webhook batches and `X-HubSpot-Signature-v3`;
//! - [`pipedrive`]: webhooks v2;
//! - [`dynamics`]: Dataverse `RemoteExecutionContext`s;
//! - [`generic`]: the signed JSON form of `CrmEvent`;
//! - [`event`]: what they share (event ids, timestamps, JSON field values);
//! - [`check`]: what every event must satisfy before it is published (ids, dates, sizes);
//! - [`users`]: what the CRMs' own user events say about CRM users being active;
//! - [`run`]: wiring the service together (configuration, PostgreSQL, Kafka, ops endpoints).

pub mod check;
pub mod dynamics;
pub mod event;
pub mod generic;
#[cfg(feature = "service")]
pub mod http;
pub mod hubspot;
#[cfg(feature = "service")]
pub mod metric_definitions;
pub mod pipedrive;
pub mod salesforce;
pub mod users;

#[cfg(feature = "service")]
mod service;
#[cfg(feature = "service")]
pub use service::{Background, SERVICE, run, run_with};
