//! One transaction of a batch, set-based: every look-up is one statement for the whole batch,
//! the outcomes are then walked in order in memory, and what they change is written with one
//! multi-row statement per table.
//!
//! Statements per transaction, whatever its size: claim the outcomes; look up their workflows,
//! the records' last known owners and the owners' identities; record and lock the identities
//! the batch has to lock; lock the activities they touch; write the owners that changed, the
//! activities and the outbox rows; read whether the users whose activities are announced count
//! on leaderboards. When the batch creates accounts, five more (see `crate::provision`); when an
//! unmapped identity learns its name or email after its first outcome, one upsert for that.

use std::collections::{BTreeMap, HashMap, HashSet};

use crm_sync_kafka::Failure;
use crm_sync_proto::Message as _;
use crm_sync_proto::announce::{ActivityFacts, activity_changed};
use crm_sync_proto::v1::ActivityState;
use crm_sync_store::provisioning::activities::{self, Activity};
use crm_sync_store::provisioning::identities::{self, Seen};
use crm_sync_store::provisioning::workflows::{self, Target};
use crm_sync_store::provisioning::{claims, users};
use crm_sync_store::record_owners::{self, RecordKey};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::apply::{Item, Provisioner, Written};
use crate::outcome::{Change, Current, Identity, Kind, Outcome, derived_id};
use crate::provision::Unprovisioned;

/// Name under which this service records the events it has applied.
const CONSUMER: &str = "provisioner";

/// What the batch's outcomes need to know before any is applied, read in one statement each.
#[derive(Default)]
struct Known {
    targets: HashMap<(Uuid, Uuid), Target>,
    /// Each record's owner: as stored, then as the batch's outcomes name it.
    owners: HashMap<RecordKey, String>,
    /// Records whose owner the batch changes.
    owners_changed: HashMap<RecordKey, Uuid>,
    identities: HashMap<(Uuid, String), Identity>,
}

/// An outcome's effect on its activity, decided once the activities are locked.
struct Effect {
    index: usize,
    /// For a matched outcome: the company, CRM user and platform user it is attributed to.
    attribution: Option<(Uuid, String, Option<Uuid>)>,
}

/// A change downstream hears of once the transaction knows whether its user is visible.
struct Announcement {
    index: usize,
    change_id: Uuid,
    row: Activity,
    /// The activity type, value and date announced (a matched outcome's own).
    state: ActivityState,
    source_event_id: String,
}

fn record_key(o: &Outcome) -> RecordKey {
    RecordKey {
        integration_id: o.integration_id,
        object_type: o.object_type.clone(),
        record_id: o.record_id.clone(),
    }
}

/// The CRM identities the batch's matched outcomes will lock (to create or link an account, or
/// to record the identity or its name and email), in key order, each with the first item that
/// names it and whether its integration auto-syncs users.
fn identities_to_lock<'a>(
    items: &'a [Item],
    fresh: &HashSet<String>,
    known: &Known,
) -> BTreeMap<(Uuid, String), (usize, Target, &'a Outcome)> {
    // The owners as the walk will see them: an outcome naming one tells later outcomes of
    // the same record who owns it.
    let mut owners = known.owners.clone();
    let mut wanted = BTreeMap::new();
    for (index, o) in items.iter().map(|i| &i.outcome).enumerate() {
        if o.kind != Kind::Matched || !fresh.contains(&o.outcome_id) {
            continue;
        }
        let Some(target) = known.targets.get(&(o.integration_id, o.workflow_id)) else {
            continue;
        };
        let record = record_key(o);
        let crm_user_id = match &o.owner {
            Some(owner) => {
                owners.insert(record, owner.crm_user_id.clone());
                owner.crm_user_id.clone()
            }
            None => match owners.get(&record) {
                Some(owner) => owner.clone(),
                None => continue,
            },
        };
        let stored = known
            .identities
            .get(&(o.integration_id, crm_user_id.clone()));
        if Identity::locks_for(stored, target.auto_sync, o, &crm_user_id) {
            wanted
                .entry((o.integration_id, crm_user_id))
                .or_insert((index, *target, o));
        }
    }
    wanted
}

impl Provisioner {
    /// Writes the outcomes in one transaction. Account creation locks the CRM identity (that is
    /// what makes it race-free across replicas); the identities the batch locks are all locked
    /// first, in key order (see [`lock_identities`]), so that concurrent batches queue on each
    /// other instead of deadlocking, and an admin's mapping (identity first, then the
    /// activities) takes its locks in the same order as the batch.
    pub(crate) async fn write(&self, items: &[Item]) -> Result<Written, Failure> {
        let mut tx = self.pool.begin().await.map_err(Failure::database)?;
        let ids: Vec<&str> = items
            .iter()
            .map(|i| i.outcome.outcome_id.as_str())
            .collect();
        let mut fresh = claims::claim(&mut tx, CONSUMER, &ids)
            .await
            .map_err(Failure::database)?;
        let mut known = look_up(&mut tx, items, &fresh).await?;
        let mut written = Written::default();
        self.lock_identities(&mut tx, items, &fresh, &mut known, &mut written)
            .await?;
        let mut effects = Vec::new();
        for (index, item) in items.iter().enumerate() {
            if !fresh.contains(&item.outcome.outcome_id) {
                written.duplicates.push(index);
                continue;
            }
            let attribution = match item.outcome.kind {
                Kind::Retracted => None,
                Kind::Matched => Some(
                    self.attribute(&mut tx, &mut known, &mut written, &item.outcome)
                        .await?,
                ),
            };
            effects.push(Effect { index, attribution });
            fresh.remove(&item.outcome.outcome_id);
            written.counts.applied += 1;
        }
        // In key order, like every multi-row write here: concurrent writers lock rows in one order.
        let mut changed: Vec<(Uuid, &RecordKey, &str)> = known
            .owners_changed
            .iter()
            .filter_map(|(key, company)| Some((*company, key, known.owners.get(key)?.as_str())))
            .collect();
        changed.sort_unstable_by(|a, b| {
            let key =
                |r: &RecordKey| (r.integration_id, r.object_type.clone(), r.record_id.clone());
            key(a.1).cmp(&key(b.1))
        });
        record_owners::remember_all(&mut tx, &changed)
            .await
            .map_err(Failure::database)?;
        self.write_activities(&mut tx, items, &effects, &mut written)
            .await?;
        let rows = std::mem::take(&mut written.staged)
            .into_iter()
            .map(|(index, message)| (index, items[index].outcome.outcome_id.as_str(), message))
            .collect();
        written
            .outbox
            .stage_all(&mut tx, rows)
            .await
            .map_err(Failure::database)?;
        tx.commit().await.map_err(Failure::database)?;
        Ok(written)
    }

    /// Locks every CRM identity the batch's matched outcomes will lock, before anything else
    /// and in key order, in one statement, and gives the ones auto-sync provisions their
    /// accounts. Taken in event order, two partitions' batches meeting the same new owners could
    /// deadlock; taken in a transaction per new owner, owners new at once would cost each
    /// partition as many transactions, one after the other. What the locked rows say replaces
    /// what `known` read without locks.
    async fn lock_identities(
        &self,
        tx: &mut PgConnection,
        items: &[Item],
        fresh: &HashSet<String>,
        known: &mut Known,
        written: &mut Written,
    ) -> Result<(), Failure> {
        let wanted = identities_to_lock(items, fresh, known);
        let seen: Vec<Seen> = wanted
            .iter()
            .map(|((integration_id, crm_user_id), (_, target, o))| {
                let (name, email) = o.details_of(crm_user_id);
                Seen {
                    company_id: target.company_id,
                    integration_id: *integration_id,
                    crm_user_id,
                    name,
                    email,
                }
            })
            .collect();
        let locked = identities::record_all(tx, &seen)
            .await
            .map_err(Failure::database)?;
        let mut unprovisioned = Vec::new();
        for row in locked {
            let key = (row.integration_id, row.crm_user_id.clone());
            let Some((index, target, _)) = wanted.get(&key) else {
                continue;
            };
            let identity = Identity {
                user_id: row.user_id,
                named: row.display_name.is_some(),
                has_email: row.email.is_some(),
                held: row.held,
            };
            known.identities.insert(key, identity);
            if identity.user_id.is_none() && Identity::provisions(Some(&identity), target.auto_sync)
            {
                unprovisioned.push(Unprovisioned {
                    index: *index,
                    company_id: target.company_id,
                    locked: row,
                });
            }
        }
        // In key order, as if provisioned one after the other: who gets a contested email.
        unprovisioned.sort_unstable_by(|a, b| {
            (a.locked.integration_id, &a.locked.crm_user_id)
                .cmp(&(b.locked.integration_id, &b.locked.crm_user_id))
        });
        let provisioned = self.provision_all(tx, written, &unprovisioned).await?;
        for (key, user_id) in provisioned {
            if let Some(identity) = known.identities.get_mut(&key) {
                identity.user_id = Some(user_id);
            }
        }
        Ok(())
    }

    /// The company, CRM user and platform user a matched outcome's activity is attributed to,
    /// recording the identity where needed (its lock is held already, see
    /// [`Self::lock_identities`]).
    async fn attribute(
        &self,
        tx: &mut PgConnection,
        known: &mut Known,
        written: &mut Written,
        o: &Outcome,
    ) -> Result<(Uuid, String, Option<Uuid>), Failure> {
        let Some(target) = known
            .targets
            .get(&(o.integration_id, o.workflow_id))
            .copied()
        else {
            return Err(Failure::permanent(
                "unknown_integration",
                format!(
                    "integration {} or its workflow {} does not exist",
                    o.integration_id, o.workflow_id
                ),
            ));
        };
        let record = record_key(o);
        let crm_user_id = match &o.owner {
            Some(owner) => owner.crm_user_id.clone(),
            None => known.owners.get(&record).cloned().ok_or_else(|| {
                Failure::permanent(
                    "unknown_owner",
                    format!(
                        "record {}/{} names no owner and none is known",
                        o.object_type, o.record_id
                    ),
                )
            })?,
        };
        let identity_key = (o.integration_id, crm_user_id.clone());
        let identity = known.identities.get(&identity_key).copied();
        if o.owner.is_some() && known.owners.get(&record) != Some(&crm_user_id) {
            known.owners.insert(record.clone(), crm_user_id.clone());
            known.owners_changed.insert(record, target.company_id);
        }
        // `lock_identities` gave every identity auto-sync provisions its account.
        let user_id = identity.and_then(|i| i.user_id);
        if user_id.is_none() {
            // Kept as unmapped: listed for admins, attached once the identity is mapped.
            if Identity::needs_write(identity.as_ref(), o, &crm_user_id) {
                let (name, email) = o.details_of(&crm_user_id);
                let seen = Seen {
                    company_id: target.company_id,
                    integration_id: o.integration_id,
                    crm_user_id: &crm_user_id,
                    name,
                    email,
                };
                identities::record_all(tx, &[seen])
                    .await
                    .map_err(Failure::database)?;
                let recorded = Identity::after_write(identity.as_ref(), o, &crm_user_id);
                known.identities.insert(identity_key, recorded);
            }
            written.counts.unmapped += 1;
        }
        Ok((target.company_id, crm_user_id, user_id))
    }

    /// Locks the activities the effects touch, applies the effects to them in order in memory,
    /// writes each changed activity once and stages what downstream must hear of.
    async fn write_activities(
        &self,
        tx: &mut PgConnection,
        items: &[Item],
        effects: &[Effect],
        written: &mut Written,
    ) -> Result<(), Failure> {
        let keys: Vec<(Uuid, &str)> = effects
            .iter()
            .map(|e| {
                let o = &items[e.index].outcome;
                (o.workflow_id, o.record_id.as_str())
            })
            .collect();
        let mut activities: HashMap<(Uuid, String), Activity> = activities::lock_all(tx, &keys)
            .await
            .map_err(Failure::database)?
            .into_iter()
            .map(|a| ((a.workflow_id, a.record_id.clone()), a))
            .collect();
        let mut dirty = HashSet::new();
        let mut announcements = Vec::new();
        for effect in effects {
            let o = &items[effect.index].outcome;
            let key = (o.workflow_id, o.record_id.clone());
            let current = activities.get(&key);
            let change = Change::of(
                o.kind,
                current.map(|a| Current {
                    recorded: a.state == "recorded",
                    last_event_at: a.last_event_at,
                }),
                o.occurred_at,
            );
            let row = match &effect.attribution {
                Some(attribution) => matched_row(o, current, attribution),
                None => {
                    *written
                        .counts
                        .retractions
                        .entry(change.retraction_result())
                        .or_default() += 1;
                    current.map(|a| retracted_row(o, a))
                }
            };
            let Some(row) = row.filter(|_| change.writes()) else {
                continue;
            };
            written.counts.activity(change);
            if change.announced() && row.user_id.is_some() {
                announcements.push(announcement(effect.index, o, &row));
            }
            dirty.insert(key.clone());
            activities.insert(key, row);
        }
        let mut dirty: Vec<(Uuid, String)> = dirty.into_iter().collect();
        dirty.sort_unstable();
        let rows: Vec<Activity> = dirty
            .into_iter()
            .filter_map(|k| activities.remove(&k))
            .collect();
        activities::write_all(tx, &rows)
            .await
            .map_err(Failure::database)?;
        self.stage_announcements(tx, written, announcements).await
    }

    /// Stages an `ActivityChanged` per announcement, `visible` as its user now counts.
    async fn stage_announcements(
        &self,
        tx: &mut PgConnection,
        written: &mut Written,
        announcements: Vec<Announcement>,
    ) -> Result<(), Failure> {
        let mut user_ids: Vec<Uuid> = announcements.iter().filter_map(|a| a.row.user_id).collect();
        user_ids.sort_unstable();
        user_ids.dedup();
        let visible = users::on_leaderboards(tx, &user_ids)
            .await
            .map_err(Failure::database)?;
        for a in announcements {
            let Some(user_id) = a.row.user_id else {
                continue;
            };
            let facts = facts_of(&a.row, user_id, &a.source_event_id);
            let change = activity_changed(
                a.change_id,
                &facts,
                a.state,
                visible.get(&user_id).copied().unwrap_or(false),
            );
            written.stage(
                a.index,
                &self.activities_topic,
                format!("{}/{user_id}", a.row.company_id),
                change.change_id.clone(),
                change.encode_to_vec(),
            );
        }
        Ok(())
    }
}

/// What downstream learns of an activity row attributed to `user_id`.
pub(crate) fn facts_of<'a>(
    row: &'a Activity,
    user_id: Uuid,
    source_event_id: &'a str,
) -> ActivityFacts<'a> {
    ActivityFacts {
        activity_id: row.id,
        company_id: row.company_id,
        user_id,
        integration_id: row.integration_id,
        workflow_id: row.workflow_id,
        activity_type: &row.activity_type,
        value: row.value.to_string(),
        activity_date: row.activity_date,
        object_type: &row.object_type,
        record_id: &row.record_id,
        source_event_id,
    }
}

/// The activity a matched outcome records (or updates, or re-activates). An existing activity
/// keeps its id and activity type.
fn matched_row(
    o: &Outcome,
    current: Option<&Activity>,
    (company_id, crm_user_id, user_id): &(Uuid, String, Option<Uuid>),
) -> Option<Activity> {
    Some(Activity {
        id: current.map_or_else(|| o.activity_id(), |a| a.id),
        company_id: current.map_or(*company_id, |a| a.company_id),
        integration_id: o.integration_id,
        workflow_id: o.workflow_id,
        object_type: o.object_type.clone(),
        record_id: o.record_id.clone(),
        crm_user_id: crm_user_id.clone(),
        user_id: *user_id,
        activity_type: current.map_or_else(|| o.activity_type.clone(), |a| a.activity_type.clone()),
        value: o.value,
        activity_date: o.activity_date,
        state: "recorded".to_owned(),
        last_event_at: o.occurred_at,
        last_event_id: o.outcome_id.clone(),
    })
}

/// The activity after a retraction: it keeps its user, value and date (deletes do not carry
/// the owner, and need not: the activity knows it), and a later match re-activates it.
fn retracted_row(o: &Outcome, current: &Activity) -> Activity {
    Activity {
        state: "retracted".to_owned(),
        last_event_at: o.occurred_at,
        last_event_id: o.outcome_id.clone(),
        ..current.clone()
    }
}

/// Everything the batch's first-time outcomes need to know, one statement per kind.
async fn look_up(
    tx: &mut PgConnection,
    items: &[Item],
    fresh: &HashSet<String>,
) -> Result<Known, Failure> {
    let matched: Vec<&Outcome> = items
        .iter()
        .map(|i| &i.outcome)
        .filter(|o| o.kind == Kind::Matched && fresh.contains(&o.outcome_id))
        .collect();
    let mut pairs: Vec<(Uuid, Uuid)> = matched
        .iter()
        .map(|o| (o.integration_id, o.workflow_id))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let targets = workflows::targets(tx, &pairs)
        .await
        .map_err(Failure::database)?;
    let mut records: Vec<RecordKey> = matched.iter().map(|o| record_key(o)).collect();
    records.sort_unstable_by(|a, b| {
        (a.integration_id, &a.object_type, &a.record_id).cmp(&(
            b.integration_id,
            &b.object_type,
            &b.record_id,
        ))
    });
    records.dedup();
    let owners = record_owners::last_known_all(tx, &records)
        .await
        .map_err(Failure::database)?;
    // The identities of every owner the outcomes name, and of the last known owners of the
    // records they do not name the owner of.
    let mut keys: Vec<(Uuid, &str)> = matched
        .iter()
        .filter_map(|o| match &o.owner {
            Some(owner) => Some((o.integration_id, owner.crm_user_id.as_str())),
            None => owners
                .get(&record_key(o))
                .map(|u| (o.integration_id, u.as_str())),
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let identities = identities::find_all(tx, &keys)
        .await
        .map_err(Failure::database)?
        .into_iter()
        .map(|i| {
            let identity = Identity {
                user_id: i.user_id,
                named: i.named,
                has_email: i.has_email,
                held: i.held,
            };
            ((i.integration_id, i.crm_user_id), identity)
        })
        .collect();
    Ok(Known {
        targets,
        owners,
        owners_changed: HashMap::new(),
        identities,
    })
}

/// What downstream hears of an activity an outcome changed: a matched outcome is announced with
/// its own activity type.
fn announcement(index: usize, o: &Outcome, row: &Activity) -> Announcement {
    Announcement {
        index,
        change_id: derived_id(&["activity-changed", &row.id.to_string(), &o.outcome_id]),
        state: if o.kind == Kind::Matched {
            ActivityState::Recorded
        } else {
            ActivityState::Retracted
        },
        source_event_id: o.event_id.clone(),
        row: if o.kind == Kind::Matched {
            // Announced with the outcome's own activity type.
            Activity {
                activity_type: o.activity_type.clone(),
                ..row.clone()
            }
        } else {
            row.clone()
        },
    }
}
