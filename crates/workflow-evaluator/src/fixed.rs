//! Missed webhooks that reconciliations made up for, per integration, for its sync status.
//!
//! A record event pulled by a reconciliation (its delivery id starts with `reconciliation:`)
//! fixed a missed webhook when it showed the pipeline something no webhook had: a record never
//! seen, a value different from the one known, another owner, or a delete. Fields merely never
//! seen before (partial webhooks) do not count. Counted per transaction and kept only once it
//! committed (so a replayed batch counts once), then added to the database in batches.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crm_sync_proto::v1::{CrmEvent, RecordState};
use crm_sync_proto::view::StateView;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::record::Merged;

/// How often committed counts are written.
const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// What a reconciliation's event needs kept of the record's state before the merge; `None` for
/// any other event (nothing is copied for them; their fields stay in the stored bytes anyway).
pub fn before<'a>(
    event: &CrmEvent,
    prior: &Option<StateView<'a>>,
) -> Option<Option<StateView<'a>>> {
    (event.full_snapshot && event.source_delivery_id.starts_with("reconciliation:"))
        .then(|| prior.clone())
}

/// Whether the merged event showed what no webhook had.
pub fn fixes(before: Option<&StateView<'_>>, merged: &Merged) -> bool {
    let Some(before) = before else {
        return merged.changed;
    };
    let after = &merged.state;
    let owner = |s: &RecordState| s.owner.as_ref().map(|o| o.crm_user_id.clone());
    before.state.deleted != after.deleted
        || (owner(&before.state).is_some() && owner(&before.state) != owner(after))
        || before
            .fields
            .iter()
            .any(|(name, known)| known.value.is_some() && merged.value(name) != known.value)
}

/// Counts committed and not yet written.
#[derive(Default)]
pub struct Pending {
    counts: Mutex<BTreeMap<Uuid, i64>>,
}

impl Pending {
    pub fn add(&self, counts: BTreeMap<Uuid, i64>) {
        let mut pending = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for (integration, n) in counts {
            *pending.entry(integration).or_default() += n;
        }
    }

    fn take(&self) -> BTreeMap<Uuid, i64> {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Until shutdown (and once more then): writes the committed counts every few seconds; counts
/// that fail to be written are kept for the next round.
pub async fn flush(pending: Arc<Pending>, pool: PgPool, shutdown: CancellationToken) {
    loop {
        let stopping = tokio::select! {
            () = shutdown.cancelled() => true,
            () = tokio::time::sleep(FLUSH_EVERY) => false,
        };
        let counts = pending.take();
        if !counts.is_empty() {
            let rows: Vec<(Uuid, i64)> = counts.iter().map(|(id, n)| (*id, *n)).collect();
            if let Err(e) = crm_sync_store::sync_status::add_missed_webhooks_fixed(
                &pool,
                &rows,
                chrono::Utc::now(),
            )
            .await
            {
                tracing::warn!(error = %e, "recording missed webhooks fixed failed; trying again");
                pending.add(counts);
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use crm_sync_proto::v1::field_value::Kind;
    use crm_sync_proto::v1::{ChangeType, FieldValue};
    use crm_sync_proto::{Message, Timestamp};

    use super::*;
    use crate::record::merge_event as merge;

    fn event(at: i64, fields: &[(&str, &str)], pulled: bool) -> CrmEvent {
        let mut e = CrmEvent {
            event_id: format!("e{at}"),
            integration_id: "i".into(),
            object_type: "deal".into(),
            record_id: "1".into(),
            occurred_at: Some(Timestamp {
                seconds: at,
                nanos: 0,
            }),
            fields: fields
                .iter()
                .map(|(k, v)| {
                    (
                        (*k).to_owned(),
                        FieldValue {
                            kind: Some(Kind::Text((*v).to_owned())),
                        },
                    )
                })
                .collect(),
            full_snapshot: pulled,
            source_delivery_id: if pulled {
                "reconciliation:job".into()
            } else {
                String::new()
            },
            ..Default::default()
        };
        e.set_change_type(ChangeType::Updated);
        e
    }

    fn counted(prior: Option<RecordState>, e: &CrmEvent) -> bool {
        let bytes = prior.as_ref().map(Message::encode_to_vec);
        let view = bytes
            .as_deref()
            .map(|b| crm_sync_proto::view::decode_state(b).unwrap());
        let before = before(e, &view);
        let merged = merge(prior, e);
        before.is_some_and(|b| fixes(b.as_ref(), &merged))
    }

    #[test]
    fn a_reconciliation_fixes_what_webhooks_missed_and_only_that() {
        let webhook = event(10, &[("dealstage", "open")], false);
        assert!(!counted(None, &webhook), "webhooks are never counted");
        let known = merge(None, &webhook).whole();

        // A value no webhook delivered.
        assert!(counted(
            Some(known.clone()),
            &event(20, &[("dealstage", "closedwon")], true)
        ));
        // A record never seen.
        assert!(counted(None, &event(20, &[("dealstage", "open")], true)));
        // The same value, plus fields the partial webhooks never carried: nothing was missed.
        assert!(!counted(
            Some(known.clone()),
            &event(20, &[("dealstage", "open"), ("amount", "10")], true)
        ));
        // An older pulled version changes nothing.
        let newer = merge(Some(known), &event(30, &[("dealstage", "lost")], false)).whole();
        assert!(!counted(
            Some(newer),
            &event(20, &[("dealstage", "closedwon")], true)
        ));
    }

    #[test]
    fn committed_counts_add_up() {
        let pending = Pending::default();
        let id = Uuid::new_v4();
        pending.add(BTreeMap::from([(id, 2)]));
        pending.add(BTreeMap::from([(id, 3)]));
        assert_eq!(pending.take(), BTreeMap::from([(id, 5)]));
        assert!(pending.take().is_empty());
    }
}
