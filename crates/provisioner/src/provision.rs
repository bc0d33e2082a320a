//! Creating (or linking) the platform account of a CRM identity, exactly once even when
//! replicas race: the identity row is inserted first and then locked, so only one transaction
//! finds it without a user and creates one; the others wait for it and reuse its user.

use crm_sync_kafka::Failure;
use crm_sync_proto::Message as _;
use crm_sync_proto::announce::{UserFacts, activity_changed, user_provisioned, user_status};
use crm_sync_proto::v1::ActivityState;
use crm_sync_store::provisioning::{activities, identities, users, workflows};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::apply::{Provisioner, Written};
use crate::batch::facts_of;
use crate::outcome::{Outcome, derived_id};

/// A CRM identity in a company.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdentityRef<'a> {
    pub company_id: Uuid,
    pub integration_id: Uuid,
    pub crm_user_id: &'a str,
}

impl Provisioner {
    /// Records the outcome's view of the identity, then provisions its account. Messages are
    /// staged in `written` under item `index`.
    pub(crate) async fn provision_user(
        &self,
        tx: &mut PgConnection,
        written: &mut Written,
        index: usize,
        company_id: Uuid,
        o: &Outcome,
        crm_user_id: &str,
    ) -> Result<Uuid, Failure> {
        let details = o.details_of(crm_user_id);
        identities::record(tx, company_id, o.integration_id, crm_user_id, details)
            .await
            .map_err(Failure::database)?;
        let identity = IdentityRef {
            company_id,
            integration_id: o.integration_id,
            crm_user_id,
        };
        self.provision_identity(tx, written, index, identity).await
    }

    /// The part of [`Self::provision_user`] that needs no outcome: the identity row must exist.
    async fn provision_identity(
        &self,
        tx: &mut PgConnection,
        written: &mut Written,
        index: usize,
        identity: IdentityRef<'_>,
    ) -> Result<Uuid, Failure> {
        let IdentityRef {
            company_id,
            integration_id,
            crm_user_id,
        } = identity;
        let locked = identities::lock(tx, integration_id, crm_user_id)
            .await
            .map_err(Failure::database)?;
        // Never re-linked: an identity keeps the account it has.
        if let Some(user_id) = locked.user_id {
            return Ok(user_id);
        }
        let display_name = locked
            .display_name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| crm_user_id.to_owned());
        let directory_email = locked.directory_email.filter(|e| !e.trim().is_empty());
        let payload_email = locked.email.filter(|e| !e.trim().is_empty());
        let linked_to = match &directory_email {
            Some(email) => users::account_to_link(tx, company_id, email)
                .await
                .map_err(Failure::database)?,
            None => None,
        };
        let (user_id, status, linked, email) = match linked_to {
            Some((id, status)) => (id, status, true, directory_email),
            None => {
                let emails = (directory_email, payload_email);
                let (id, email) = create_account(tx, identity, &display_name, emails).await?;
                (id, "pending".to_owned(), false, email)
            }
        };
        identities::map_to(tx, integration_id, crm_user_id, user_id)
            .await
            .map_err(Failure::database)?;
        let event_id = derived_id(&["user-provisioned", &integration_id.to_string(), crm_user_id]);
        let provisioned = user_provisioned(
            event_id,
            &UserFacts {
                company_id,
                user_id,
                integration_id: Some(integration_id),
                crm_user_id,
                display_name: &display_name,
                email: email.as_deref(),
                status: user_status(&status, false),
                linked_existing_user: linked,
                merged_user_ids: &[],
            },
        );
        written.stage(
            index,
            &self.users_topic,
            format!("{company_id}/{user_id}"),
            provisioned.event_id.clone(),
            provisioned.encode_to_vec(),
        );
        if linked {
            written.counts.users_linked += 1;
        } else {
            written.counts.users_created += 1;
        }
        tracing::info!(%user_id, %integration_id, crm_user_id, linked, "provisioned platform user");
        self.attach_unmapped(tx, written, index, identity, user_id)
            .await?;
        Ok(user_id)
    }

    /// Activities kept while the identity was unmapped now belong to the user.
    async fn attach_unmapped(
        &self,
        tx: &mut PgConnection,
        written: &mut Written,
        index: usize,
        identity: IdentityRef<'_>,
        user_id: Uuid,
    ) -> Result<(), Failure> {
        let attached =
            activities::attach_unmapped(tx, identity.integration_id, identity.crm_user_id, user_id)
                .await
                .map_err(Failure::database)?;
        if attached.is_empty() {
            return Ok(());
        }
        let visible = users::on_leaderboards(tx, &[user_id])
            .await
            .map_err(Failure::database)?
            .get(&user_id)
            .copied()
            .unwrap_or(false);
        for a in &attached {
            let change_id =
                derived_id(&["activity-attached", &a.id.to_string(), &user_id.to_string()]);
            let facts = facts_of(a, user_id, &a.last_event_id);
            let change = activity_changed(change_id, &facts, ActivityState::Recorded, visible);
            written.stage(
                index,
                &self.activities_topic,
                format!("{}/{user_id}", identity.company_id),
                change.change_id.clone(),
                change.encode_to_vec(),
            );
        }
        tracing::info!(%user_id, attached = attached.len(), "attached unmapped activities");
        Ok(())
    }

    /// Provisions one CRM identity that is waiting with unmapped activities, in a transaction
    /// of its own, and publishes what it staged (for `crate::auto_sync`, when auto-sync was
    /// turned on). Nothing happens if auto-sync was turned off meanwhile. The outbox rows are
    /// staged under `staged_under`, unique per attempt, so that a crash between commit and
    /// publishing leaves them to the relay.
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
        let mut written = Written::default();
        self.provision_identity(&mut tx, &mut written, 0, identity)
            .await?;
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

/// The email a new account gets (and whether only a payload supplied it): the directory's, else
/// the payload's, unless another account has it already (one account per email in a company);
/// then none, and an admin may merge the two accounts.
async fn new_account_email(
    tx: &mut PgConnection,
    company_id: Uuid,
    directory_email: Option<String>,
    payload_email: Option<String>,
) -> Result<Option<(String, bool)>, sqlx::Error> {
    let Some((email, from_payload)) = directory_email
        .map(|e| (e, false))
        .or(payload_email.map(|e| (e, true)))
    else {
        return Ok(None);
    };
    let taken = users::email_taken(tx, company_id, &email).await?;
    Ok((!taken).then_some((email, from_payload)))
}

/// A new pending account for the identity, with the directory's email (or the payload's when
/// no account has it); its id and email.
async fn create_account(
    tx: &mut PgConnection,
    identity: IdentityRef<'_>,
    display_name: &str,
    (directory_email, payload_email): (Option<String>, Option<String>),
) -> Result<(Uuid, Option<String>), Failure> {
    let IdentityRef {
        company_id,
        integration_id,
        crm_user_id,
    } = identity;
    let id = derived_id(&["user", &integration_id.to_string(), crm_user_id]);
    let email = new_account_email(tx, company_id, directory_email, payload_email)
        .await
        .map_err(Failure::database)?;
    let user = users::NewUser {
        id,
        company_id,
        display_name,
        email: email.as_ref().map(|(e, _)| e.as_str()),
        email_from_payload: email.as_ref().is_some_and(|(_, payload)| *payload),
    };
    users::create_pending(tx, &user)
        .await
        .map_err(Failure::database)?;
    Ok((id, email.map(|(e, _)| e)))
}
