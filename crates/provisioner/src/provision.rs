//! Creating (or linking) the platform accounts of CRM identities, exactly once even when
//! replicas race, and set-based: the identity rows are recorded and locked first (see
//! `identities::record_all`), so only one transaction finds each without a user and creates
//! one, the others wait for it and reuse its user. Whatever the number of accounts, it takes one
//! read of who holds their emails, one insert of the new accounts, one update mapping the
//! identities, one update attaching their waiting activities and one read of whether those
//! users count on leaderboards.

use std::collections::HashMap;

use crm_sync_kafka::Failure;
use crm_sync_proto::Message as _;
use crm_sync_proto::announce::{UserFacts, activity_changed, user_provisioned, user_status};
use crm_sync_proto::v1::ActivityState;
use crm_sync_store::provisioning::identities::{self, Locked, Seen};
use crm_sync_store::provisioning::users::{self, EmailHolder, NewUser};
use crm_sync_store::provisioning::{activities, workflows};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::apply::{Provisioner, Written};
use crate::batch::facts_of;
use crate::outcome::derived_id;

/// A CRM identity in a company.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdentityRef<'a> {
    pub company_id: Uuid,
    pub integration_id: Uuid,
    pub crm_user_id: &'a str,
}

/// An identity locked without an account, that auto-sync gives one.
#[derive(Debug, Clone)]
pub(crate) struct Unprovisioned {
    /// The item whose messages include the account's.
    pub index: usize,
    pub company_id: Uuid,
    pub locked: Locked,
}

/// What an identity gets: an existing account linked by email, or a new pending one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Account {
    user_id: Uuid,
    status: String,
    linked: bool,
    display_name: String,
    email: Option<String>,
    /// Only the event's payload supplied the new account's email.
    email_from_payload: bool,
}

/// The account of a company that holds an email.
#[derive(Debug, Clone)]
struct Holder {
    user_id: Uuid,
    status: String,
    email_from_payload: bool,
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.trim().is_empty())
}

/// The accounts the identities get, decided in the order given as if one after the other:
/// an identity whose directory email an account has (one an admin or a directory gave, never a
/// payload) is linked to it; any other gets a new account with the directory's email, else the
/// payload's, unless an account has that email already (one per email in a company; then none,
/// and an admin may merge the two). An account created here holds its email for the identities
/// after it. `holders` maps (company, email as given) to the email lowered as the database
/// compares it and the account that holds it there.
fn plan(
    identities: &[Unprovisioned],
    holders: &HashMap<(Uuid, &str), (String, Option<Holder>)>,
) -> Vec<Account> {
    let mut held: HashMap<(Uuid, String), Holder> = holders
        .iter()
        .filter_map(|((company, _), (lowered, holder))| {
            Some(((*company, lowered.clone()), holder.clone()?))
        })
        .collect();
    let lowered = |company: Uuid, email: &str| {
        holders
            .get(&(company, email))
            .map_or_else(|| email.to_lowercase(), |(l, _)| l.clone())
    };
    let mut accounts = Vec::with_capacity(identities.len());
    for u in identities {
        let company = u.company_id;
        let l = &u.locked;
        let display_name = non_empty(&l.display_name)
            .unwrap_or(&l.crm_user_id)
            .to_owned();
        let directory = non_empty(&l.directory_email);
        let linked_to = directory
            .and_then(|e| held.get(&(company, lowered(company, e))))
            .filter(|h| !h.email_from_payload);
        if let Some(holder) = linked_to {
            accounts.push(Account {
                user_id: holder.user_id,
                status: holder.status.clone(),
                linked: true,
                display_name,
                email: directory.map(str::to_owned),
                email_from_payload: false,
            });
            continue;
        }
        let user_id = derived_id(&["user", &l.integration_id.to_string(), &l.crm_user_id]);
        let candidate = directory
            .map(|e| (e, false))
            .or(non_empty(&l.email).map(|e| (e, true)));
        let email = candidate.filter(|(e, _)| !held.contains_key(&(company, lowered(company, e))));
        if let Some((e, from_payload)) = email {
            let holder = Holder {
                user_id,
                status: "pending".to_owned(),
                email_from_payload: from_payload,
            };
            held.insert((company, lowered(company, e)), holder);
        }
        accounts.push(Account {
            user_id,
            status: "pending".to_owned(),
            linked: false,
            display_name,
            email: email.map(|(e, _)| e.to_owned()),
            email_from_payload: email.is_some_and(|(_, payload)| payload),
        });
    }
    accounts
}

impl Provisioner {
    /// Gives each locked identity its account (see [`plan`]), maps the identity to it and
    /// attaches its waiting activities; stages `UserProvisioned` and the attached activities'
    /// `ActivityChanged` under each identity's item. Returns the user of each (integration,
    /// CRM user).
    pub(crate) async fn provision_all(
        &self,
        tx: &mut PgConnection,
        written: &mut Written,
        identities: &[Unprovisioned],
    ) -> Result<HashMap<(Uuid, String), Uuid>, Failure> {
        if identities.is_empty() {
            return Ok(HashMap::new());
        }
        let mut emails: Vec<(Uuid, &str)> = identities
            .iter()
            .flat_map(|u| {
                let l = &u.locked;
                [non_empty(&l.directory_email), non_empty(&l.email)]
                    .into_iter()
                    .flatten()
                    .map(move |e| (u.company_id, e))
            })
            .collect();
        emails.sort_unstable();
        emails.dedup();
        let found = users::holders_of(tx, &emails)
            .await
            .map_err(Failure::database)?;
        let holders = emails.into_iter().zip(found).map(holder_of).collect();
        let accounts = plan(identities, &holders);
        let new_users: Vec<NewUser> = identities
            .iter()
            .zip(&accounts)
            .filter(|(_, a)| !a.linked)
            .map(|(u, a)| NewUser {
                id: a.user_id,
                company_id: u.company_id,
                display_name: a.display_name.clone(),
                email: a.email.clone(),
                email_from_payload: a.email_from_payload,
            })
            .collect();
        users::create_pending_all(tx, &new_users)
            .await
            .map_err(Failure::database)?;
        let mappings: Vec<(Uuid, &str, Uuid)> = identities
            .iter()
            .zip(&accounts)
            .map(|(u, a)| {
                (
                    u.locked.integration_id,
                    u.locked.crm_user_id.as_str(),
                    a.user_id,
                )
            })
            .collect();
        identities::map_all(tx, &mappings)
            .await
            .map_err(Failure::database)?;
        for (u, account) in identities.iter().zip(&accounts) {
            self.stage_provisioned(written, u, account);
        }
        self.attach_unmapped(tx, written, identities, &mappings)
            .await?;
        Ok(mappings
            .into_iter()
            .map(|(integration, crm_user, user)| ((integration, crm_user.to_owned()), user))
            .collect())
    }

    /// Stages the `UserProvisioned` of an identity's account.
    fn stage_provisioned(&self, written: &mut Written, u: &Unprovisioned, account: &Account) {
        let (company_id, integration_id) = (u.company_id, u.locked.integration_id);
        let crm_user_id = u.locked.crm_user_id.as_str();
        let user_id = account.user_id;
        let event_id = derived_id(&["user-provisioned", &integration_id.to_string(), crm_user_id]);
        let provisioned = user_provisioned(
            event_id,
            &UserFacts {
                company_id,
                user_id,
                integration_id: Some(integration_id),
                crm_user_id,
                display_name: &account.display_name,
                email: account.email.as_deref(),
                status: user_status(&account.status, false),
                linked_existing_user: account.linked,
                merged_user_ids: &[],
            },
        );
        written.stage(
            u.index,
            &self.users_topic,
            format!("{company_id}/{user_id}"),
            provisioned.event_id.clone(),
            provisioned.encode_to_vec(),
        );
        if account.linked {
            written.counts.users_linked += 1;
        } else {
            written.counts.users_created += 1;
        }
        let linked = account.linked;
        tracing::info!(%user_id, %integration_id, crm_user_id, linked, "provisioned platform user");
    }

    /// Activities kept while the identities were unmapped now belong to their users.
    async fn attach_unmapped(
        &self,
        tx: &mut PgConnection,
        written: &mut Written,
        identities: &[Unprovisioned],
        mappings: &[(Uuid, &str, Uuid)],
    ) -> Result<(), Failure> {
        let attached = activities::attach_unmapped_all(tx, mappings)
            .await
            .map_err(Failure::database)?;
        if attached.is_empty() {
            return Ok(());
        }
        let mut user_ids: Vec<Uuid> = mappings.iter().map(|m| m.2).collect();
        user_ids.sort_unstable();
        user_ids.dedup();
        let visible = users::on_leaderboards(tx, &user_ids)
            .await
            .map_err(Failure::database)?;
        let index_of: HashMap<(Uuid, &str), usize> = identities
            .iter()
            .map(|u| {
                (
                    (u.locked.integration_id, u.locked.crm_user_id.as_str()),
                    u.index,
                )
            })
            .collect();
        for a in &attached {
            let Some(user_id) = a.user_id else {
                continue;
            };
            let index = index_of
                .get(&(a.integration_id, a.crm_user_id.as_str()))
                .copied()
                .unwrap_or_default();
            let change_id =
                derived_id(&["activity-attached", &a.id.to_string(), &user_id.to_string()]);
            let facts = facts_of(a, user_id, &a.last_event_id);
            let shown = visible.get(&user_id).copied().unwrap_or(false);
            let change = activity_changed(change_id, &facts, ActivityState::Recorded, shown);
            written.stage(
                index,
                &self.activities_topic,
                format!("{}/{user_id}", a.company_id),
                change.change_id.clone(),
                change.encode_to_vec(),
            );
        }
        tracing::info!(attached = attached.len(), "attached unmapped activities");
        Ok(())
    }

    /// Provisions one CRM identity that is waiting with unmapped activities, in a transaction
    /// of its own, and publishes what it staged (for `crate::auto_sync`, when auto-sync was
    /// turned on). Nothing happens if auto-sync was turned off meanwhile, or an admin has
    /// mapped or unmapped the identity. The outbox rows are staged under `staged_under`, unique
    /// per attempt, so that a crash between commit and publishing leaves them to the relay.
    pub(crate) async fn provision_waiting_identity(
        &self,
        identity: IdentityRef<'_>,
        staged_under: &str,
    ) -> Result<(), Failure> {
        let mut tx = self.pool.begin().await.map_err(Failure::database)?;
        // Re-read in the transaction: the admin may have turned auto-sync off since.
        let still_on = workflows::auto_sync_enabled(&mut tx, identity.integration_id)
            .await
            .map_err(Failure::database)?;
        if still_on != Some(true) {
            return Ok(());
        }
        let seen = Seen {
            company_id: identity.company_id,
            integration_id: identity.integration_id,
            crm_user_id: identity.crm_user_id,
            name: "",
            email: "",
        };
        let locked = identities::record_all(&mut tx, &[seen])
            .await
            .map_err(Failure::database)?;
        let waiting: Vec<Unprovisioned> = locked
            .into_iter()
            .filter(|l| l.user_id.is_none() && !l.held)
            .map(|locked| Unprovisioned {
                index: 0,
                company_id: identity.company_id,
                locked,
            })
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        let mut written = Written::default();
        self.provision_all(&mut tx, &mut written, &waiting).await?;
        let rows = std::mem::take(&mut written.staged)
            .into_iter()
            .map(|(index, message)| (index, staged_under, message))
            .collect();
        written
            .outbox
            .stage_all(&mut tx, rows)
            .await
            .map_err(Failure::database)?;
        tx.commit().await.map_err(Failure::database)?;
        written.counts.emit(0);
        // Committed: if publishing fails now, the outbox relay sends the rows later.
        self.outbox
            .publish(written.outbox)
            .await
            .map_err(Failure::transient)?;
        Ok(())
    }
}

/// One row of [`users::holders_of`], keyed by the email as it was asked for.
fn holder_of(
    (key, found): ((Uuid, &str), EmailHolder),
) -> ((Uuid, &str), (String, Option<Holder>)) {
    let holder = found.user_id.map(|user_id| Holder {
        user_id,
        status: found.status.unwrap_or_else(|| "pending".to_owned()),
        email_from_payload: found.email_from_payload.unwrap_or(false),
    });
    (key, (found.lowered, holder))
}

#[cfg(test)]
#[path = "provision_tests.rs"]
mod tests;
