//! What `crm-sync apply` prints: every object with its change and id, the ingest paths, the
//! values kept because the file omits them, and warnings; never a secret.

use std::io::Write;

use super::apply::Applied;
use crate::tenants_file::Crm;

/// A readable summary with every id and ingest path; never a token.
pub fn print_summary(out: &mut impl Write, source: &str, applied: &Applied) -> std::io::Result<()> {
    for c in &applied.companies {
        writeln!(
            out,
            "company {} ({})  {}  id {}",
            c.slug, c.name, c.change, c.id
        )?;
        for i in &c.integrations {
            writeln!(
                out,
                "  integration {} [{}]  {}  id {}",
                i.name,
                i.crm.as_str(),
                i.change,
                i.id
            )?;
            let auth = match i.crm {
                Crm::Salesforce => "?token=<webhook token>",
                _ => "",
            };
            writeln!(out, "    ingest: POST {}{auth}", i.crm.ingest_path(i.id))?;
            if let Some(on) = i.kept_auto_sync {
                let state = if on { "on" } else { "off" };
                writeln!(out, "    auto_sync_users: {state} (kept: not in the file)")?;
            }
            if i.crm == Crm::Salesforce && !i.has_token {
                writeln!(
                    out,
                    "    warning: no webhook token is set, so ingest refuses this integration's webhooks"
                )?;
            }
            if i.crm != Crm::Salesforce && !i.has_credentials {
                writeln!(
                    out,
                    "    warning: no credentials are set, so ingest cannot authenticate this integration's webhooks"
                )?;
            }
            for w in &i.workflows {
                let state = match (w.active, w.active_kept) {
                    (true, false) => "active",
                    (false, false) => "inactive",
                    (true, true) => "active, kept: not in the file",
                    (false, true) => "inactive, kept: not in the file",
                };
                writeln!(
                    out,
                    "    workflow {} ({state})  {}  id {}",
                    w.name, w.change, w.id
                )?;
            }
        }
        for t in &c.teams {
            writeln!(out, "  team {}  {}  id {}", t.name, t.change, t.id)?;
        }
    }
    let (created, updated, unchanged) = applied.counts();
    writeln!(
        out,
        "applied {source}: {created} created, {updated} updated, {unchanged} unchanged"
    )
}
