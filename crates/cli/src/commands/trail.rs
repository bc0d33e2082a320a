//! `crm-sync trail <integration> <record id>`: a record's story from the command line (each
//! event the pipeline judged, every workflow's decision with the reason in words, what followed
//! and the record's dead letters), read from the database like the admin API's trail.

use std::io::Write;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use crm_sync_store::trail::{self, EventRow};
use serde_json::Value;

use crate::commands::backfill::find_integration;
use crate::context::Context;

/// Events printed at most, newest last.
const EVENTS: i64 = 50;

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub async fn run(
    ctx: &Context,
    integration: &str,
    record_id: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let record_id = record_id.trim();
    anyhow::ensure!(!record_id.is_empty(), "the record id must not be empty");
    let pool = ctx.pool().await?;
    let integration = find_integration(&pool, integration).await?;
    let (company, id) = (integration.company_id, integration.id);
    let mut events = trail::record_events(&pool, company, id, record_id, EVENTS)
        .await
        .context("reading the record's trail")?;
    events.reverse();
    let followed = trail::record_activities(&pool, company, id, record_id)
        .await
        .context("reading the record's activities")?;
    let dead = trail::dead_letters(&pool, company, id, Some(record_id), None, EVENTS)
        .await
        .context("reading the record's dead letters")?;
    writeln!(out, "Record {record_id} of {}", integration.name)?;
    if events.is_empty() && followed.is_empty() && dead.is_empty() {
        writeln!(
            out,
            "Nothing recorded for this record (the trail keeps events for trail.retention_days; check the record id and integration)."
        )?;
        return Ok(());
    }
    if events.is_empty() {
        // Activities or dead letters without a judged event: the entries expired, or were
        // dropped while the evaluator could not write them.
        writeln!(
            out,
            "No judged event in the trail (expired after trail.retention_days, or dropped while the evaluator could not write it: crm_sync_trail_dropped_total)."
        )?;
    }
    for event in &events {
        print_event(event, out)?;
    }
    if !followed.is_empty() {
        writeln!(out, "\nWhat followed:")?;
        for a in &followed {
            let who = match &a.user_name {
                Some(name) => format!("{name} ({})", a.user_status.as_deref().unwrap_or("?")),
                None => format!("CRM user {} not mapped yet (waiting)", a.crm_user_id),
            };
            writeln!(
                out,
                "  {}: activity {} ({} {}), {who}",
                a.workflow_name, a.state, a.activity_type, a.value
            )?;
        }
    }
    if !dead.is_empty() {
        writeln!(out, "\nDead letters:")?;
        for d in &dead {
            writeln!(
                out,
                "  {} {} at {}/{}@{} by {}: {}: {}",
                at(d.at),
                d.object_type,
                d.topic,
                d.partition,
                d.offset,
                d.service,
                d.reason,
                d.detail
            )?;
        }
    }
    Ok(())
}

fn print_event(e: &EventRow, out: &mut impl Write) -> anyhow::Result<()> {
    let source = if e.source_change_type.is_empty() {
        format!("{} {}", e.crm, e.source)
    } else {
        format!("{} {} {}", e.crm, e.source, e.source_change_type)
    };
    let delivery = if e.delivery_id.is_empty() {
        String::new()
    } else {
        format!(", delivery {}", e.delivery_id)
    };
    writeln!(
        out,
        "\n{} {} {} via {source} (event {}{delivery}): {}",
        at(e.judged_at),
        e.object_type,
        e.change_type,
        e.event_id,
        e.summary.replace('_', " ")
    )?;
    let decisions = e
        .decisions
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if decisions.is_empty() && e.summary == "no_match" {
        writeln!(out, "  no active workflow for {}", e.object_type)?;
    }
    for d in decisions {
        let text = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or_default();
        let reason = match text("reason") {
            "" => String::new(),
            r => format!(" ({r})"),
        };
        writeln!(
            out,
            "  {}: {}{reason}",
            text("workflow"),
            text("decision").replace('_', " ")
        )?;
        for line in d
            .get("explanation")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            writeln!(out, "    - {line}")?;
        }
    }
    Ok(())
}
