//! Applying one `WorkflowOutcome` to the database, exactly once per outcome id: a matched one
//! records (or updates, or re-activates) its activity, a retracted one retracts it.

use chrono::{DateTime, Utc};
use crm_sync_kafka::{Failure, Incoming, MessageHandler, Publisher};
use crm_sync_proto::v1::{
    ActivityChanged, ActivityState, OutcomeKind, UserProvisioned, UserStatus, WorkflowOutcome,
};
use crm_sync_proto::{Message, Timestamp};
use rust_decimal::Decimal;
use sqlx::{PgPool, Postgres, Transaction};
use tracing::Instrument;
use uuid::Uuid;

use crate::outbox::{self, Pending};

/// Name under which this service records the events it has applied.
const CONSUMER: &str = "provisioner";
/// Namespace of provisioner-derived ids (activities, change ids, provisioning event ids).
const NAMESPACE: Uuid = Uuid::from_u128(0x3b9d_7e21_55c4_4a0e_b1f6_2d8c_9e07_a4f3);

fn derived_id(parts: &[&str]) -> Uuid {
    Uuid::new_v5(&NAMESPACE, parts.join("\u{1f}").as_bytes())
}

/// Cheap to clone (handles on the pool, the producer and the directory): `crate::auto_sync`
/// provisions through a clone of the consumer's.
#[derive(Clone)]
pub struct Provisioner {
    pub pool: PgPool,
    pub publisher: Publisher,
    pub activities_topic: String,
    pub users_topic: String,
    /// Looks CRM users up (name, email) before an account is created for them; None without
    /// `secrets.encryption_key`.
    pub directory: Option<std::sync::Arc<crate::directory::Directory>>,
}

impl MessageHandler for Provisioner {
    async fn handle(&self, message: &Incoming<'_>) -> Result<(), Failure> {
        let outcome =
            WorkflowOutcome::decode(message.payload.unwrap_or_default()).map_err(|e| {
                Failure::permanent(
                    "undecodable",
                    format!("not a crm_sync.v1.WorkflowOutcome: {e}"),
                )
            })?;
        let parsed = Parsed::from(&outcome)?;
        // Outside the transaction: a slow CRM API must not hold row locks.
        if let Some(directory) = &self.directory {
            directory.prepare(&outcome).await;
        }
        let applied = match outcome.kind() {
            OutcomeKind::Matched => {
                self.apply_matched(&outcome, &parsed)
                    .instrument(self.transaction_span())
                    .await?
            }
            OutcomeKind::Retracted => {
                self.apply_retracted(&outcome, &parsed)
                    .instrument(self.transaction_span())
                    .await?
            }
            OutcomeKind::Unspecified => {
                return Err(Failure::permanent(
                    "invalid_outcome",
                    "outcome kind is unspecified",
                ));
            }
        };
        if applied == Applied::Duplicate {
            metrics::counter!("crm_sync_provisioner_outcomes_total", "result" => "duplicate")
                .increment(1);
        }
        // Publish what this outcome staged, including leftovers of an earlier interrupted attempt.
        outbox::publish(&self.pool, &self.publisher, Some(&outcome.outcome_id))
            .await
            .map_err(Failure::Transient)?;
        Ok(())
    }
}

struct Parsed {
    integration_id: Uuid,
    workflow_id: Uuid,
    value: Decimal,
    activity_date: DateTime<Utc>,
    occurred_at: DateTime<Utc>,
}

impl Parsed {
    fn from(o: &WorkflowOutcome) -> Result<Parsed, Failure> {
        let uuid = |name: &'static str, v: &str| {
            Uuid::parse_str(v).map_err(|_| {
                Failure::permanent("invalid_outcome", format!("{name} {v:?} is not a UUID"))
            })
        };
        if o.outcome_id.is_empty() || o.record_id.is_empty() {
            return Err(Failure::permanent(
                "invalid_outcome",
                "outcome_id and record_id are required",
            ));
        }
        let value = o.value.parse::<Decimal>().map_err(|e| {
            Failure::permanent("invalid_outcome", format!("value {:?}: {e}", o.value))
        })?;
        let occurred_at = o
            .occurred_at
            .as_ref()
            .and_then(to_datetime)
            .unwrap_or_else(Utc::now);
        Ok(Parsed {
            integration_id: uuid("integration_id", &o.integration_id)?,
            workflow_id: uuid("workflow_id", &o.workflow_id)?,
            value,
            activity_date: o
                .activity_date
                .as_ref()
                .and_then(to_datetime)
                .unwrap_or(occurred_at),
            occurred_at,
        })
    }
}

fn to_datetime(ts: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

fn to_timestamp(dt: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: dt.timestamp(),
        nanos: dt.timestamp_subsec_nanos() as i32,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Applied {
    Done,
    Duplicate,
}

/// A transaction's database error is always worth retrying: connection loss, serialization
/// failures and deadlocks all resolve on a later attempt.
fn db(error: sqlx::Error) -> Failure {
    Failure::transient(anyhow::Error::new(error).context("database"))
}

impl Provisioner {
    /// The database write of one outcome as a client span (OpenTelemetry database conventions),
    /// so a trace shows how long the transaction took, retries and lock waits included.
    fn transaction_span(&self) -> tracing::Span {
        let options = self.pool.connect_options();
        tracing::info_span!(
            "db_transaction",
            otel.name = "TRANSACTION apply_outcome",
            otel.kind = "client",
            db.system.name = "postgresql",
            db.namespace = options.get_database().unwrap_or_default(),
            db.operation.name = "TRANSACTION",
            db.query.summary = "apply workflow outcome",
            server.address = options.get_host(),
            server.port = options.get_port(),
        )
    }

    async fn apply_matched(&self, o: &WorkflowOutcome, p: &Parsed) -> Result<Applied, Failure> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let first_time = sqlx::query(
            "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(CONSUMER)
        .bind(&o.outcome_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected()
            == 1;
        if !first_time {
            return Ok(Applied::Duplicate);
        }

        let integration: Option<(Uuid, bool)> = sqlx::query_as(
            "SELECT i.company_id, i.auto_sync_users FROM integrations i
             JOIN workflows w ON w.integration_id = i.id AND w.id = $2
             WHERE i.id = $1",
        )
        .bind(p.integration_id)
        .bind(p.workflow_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some((company_id, auto_sync)) = integration else {
            return Err(Failure::permanent(
                "unknown_integration",
                format!(
                    "integration {} or its workflow {} does not exist",
                    p.integration_id, p.workflow_id
                ),
            ));
        };

        let named_owner = o
            .owner
            .as_ref()
            .map(|u| u.crm_user_id.as_str())
            .filter(|s| !s.is_empty());
        let crm_user_id = match named_owner {
            Some(owner) => {
                remember_owner(&mut tx, company_id, p.integration_id, o, owner)
                    .await
                    .map_err(db)?;
                owner.to_owned()
            }
            None => last_known_owner(&mut tx, p.integration_id, o)
                .await
                .map_err(db)?
                .ok_or_else(|| {
                    Failure::permanent(
                        "unknown_owner",
                        format!(
                            "record {}/{} names no owner and none is known",
                            o.object_type, o.record_id
                        ),
                    )
                })?,
        };

        let user_id = match mapped_user(&mut tx, p.integration_id, &crm_user_id)
            .await
            .map_err(db)?
        {
            Some(user_id) => Some(user_id),
            None if auto_sync => Some(
                self.provision_user(&mut tx, company_id, p.integration_id, o, &crm_user_id)
                    .await?,
            ),
            None => {
                // Kept as unmapped: listed for admins, attached once the identity is mapped.
                ensure_identity(&mut tx, company_id, p.integration_id, o, &crm_user_id)
                    .await
                    .map_err(db)?;
                metrics::counter!("crm_sync_provisioner_unmapped_activities_total").increment(1);
                None
            }
        };

        let activity_id = derived_id(&["activity", &o.workflow_id, &o.record_id]);
        let written: Option<(bool,)> = sqlx::query_as(
            "INSERT INTO activities (id, company_id, integration_id, workflow_id, object_type, record_id,
                                     crm_user_id, user_id, activity_type, value, activity_date, state,
                                     last_event_at, last_event_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'recorded', $12, $13)
             ON CONFLICT (workflow_id, record_id) DO UPDATE SET
                 crm_user_id = EXCLUDED.crm_user_id, user_id = EXCLUDED.user_id,
                 value = EXCLUDED.value, activity_date = EXCLUDED.activity_date, state = 'recorded',
                 last_event_at = EXCLUDED.last_event_at, last_event_id = EXCLUDED.last_event_id,
                 updated_at = now()
             -- An older change arriving late must not overwrite a newer one.
             WHERE activities.last_event_at <= EXCLUDED.last_event_at
             RETURNING (xmax = 0)",
        )
        .bind(activity_id)
        .bind(company_id)
        .bind(p.integration_id)
        .bind(p.workflow_id)
        .bind(&o.object_type)
        .bind(&o.record_id)
        .bind(&crm_user_id)
        .bind(user_id)
        .bind(&o.activity_type)
        .bind(p.value)
        .bind(p.activity_date)
        .bind(p.occurred_at)
        .bind(&o.outcome_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;

        if let (Some((inserted,)), Some(user_id)) = (written, user_id) {
            let visible = on_a_team(&mut tx, user_id).await.map_err(db)?;
            let change = ActivityChanged {
                change_id: derived_id(&[
                    "activity-changed",
                    &activity_id.to_string(),
                    &o.outcome_id,
                ])
                .to_string(),
                activity_id: activity_id.to_string(),
                company_id: company_id.to_string(),
                user_id: user_id.to_string(),
                integration_id: o.integration_id.clone(),
                workflow_id: o.workflow_id.clone(),
                activity_type: o.activity_type.clone(),
                value: p.value.to_string(),
                activity_date: Some(to_timestamp(p.activity_date)),
                visible,
                object_type: o.object_type.clone(),
                record_id: o.record_id.clone(),
                source_event_id: o.event_id.clone(),
                changed_at: Some(to_timestamp(Utc::now())),
                state: ActivityState::Recorded as i32,
            };
            self.stage_activity(&mut tx, &o.outcome_id, &change).await?;
            metrics::counter!("crm_sync_provisioner_activities_total", "result" => if inserted { "recorded" } else { "updated" })
                .increment(1);
        }
        tx.commit().await.map_err(db)?;
        metrics::counter!("crm_sync_provisioner_outcomes_total", "result" => "applied")
            .increment(1);
        Ok(Applied::Done)
    }

    /// Retracts the activity of (workflow, record), if there is one: the record no longer
    /// matches, or was deleted. The activity keeps its user, value and date (deletes do not
    /// carry the owner, and need not: the activity knows it), and a later match re-activates
    /// it. Without an activity there is nothing to retract; that is counted, not an error.
    async fn apply_retracted(&self, o: &WorkflowOutcome, p: &Parsed) -> Result<Applied, Failure> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let first_time = sqlx::query(
            "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(CONSUMER)
        .bind(&o.outcome_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected()
            == 1;
        if !first_time {
            return Ok(Applied::Duplicate);
        }
        #[derive(sqlx::FromRow)]
        struct Existing {
            id: Uuid,
            company_id: Uuid,
            user_id: Option<Uuid>,
            activity_type: String,
            value: Decimal,
            activity_date: DateTime<Utc>,
            state: String,
            last_event_at: DateTime<Utc>,
        }
        let existing: Option<Existing> = sqlx::query_as(
            "SELECT id, company_id, user_id, activity_type, value, activity_date, state, last_event_at
             FROM activities WHERE workflow_id = $1 AND record_id = $2 FOR UPDATE",
        )
        .bind(p.workflow_id)
        .bind(&o.record_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let result = match existing {
            None => "nothing_to_retract",
            // An older change arriving late must not overwrite a newer one.
            Some(a) if a.last_event_at > p.occurred_at => "stale",
            Some(a) => {
                sqlx::query(
                    "UPDATE activities SET state = 'retracted', last_event_at = $2, last_event_id = $3,
                                           updated_at = now()
                     WHERE id = $1",
                )
                .bind(a.id)
                .bind(p.occurred_at)
                .bind(&o.outcome_id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                if a.state == "retracted" {
                    "already_retracted"
                } else {
                    if let Some(user_id) = a.user_id {
                        let visible = on_a_team(&mut tx, user_id).await.map_err(db)?;
                        let change = ActivityChanged {
                            change_id: derived_id(&[
                                "activity-changed",
                                &a.id.to_string(),
                                &o.outcome_id,
                            ])
                            .to_string(),
                            activity_id: a.id.to_string(),
                            company_id: a.company_id.to_string(),
                            user_id: user_id.to_string(),
                            integration_id: o.integration_id.clone(),
                            workflow_id: o.workflow_id.clone(),
                            activity_type: a.activity_type.clone(),
                            value: a.value.to_string(),
                            activity_date: Some(to_timestamp(a.activity_date)),
                            state: ActivityState::Retracted as i32,
                            visible,
                            object_type: o.object_type.clone(),
                            record_id: o.record_id.clone(),
                            source_event_id: o.event_id.clone(),
                            changed_at: Some(to_timestamp(Utc::now())),
                        };
                        self.stage_activity(&mut tx, &o.outcome_id, &change).await?;
                    }
                    metrics::counter!("crm_sync_provisioner_activities_total", "result" => "retracted")
                        .increment(1);
                    "retracted"
                }
            }
        };
        tx.commit().await.map_err(db)?;
        metrics::counter!("crm_sync_provisioner_retractions_total", "result" => result)
            .increment(1);
        metrics::counter!("crm_sync_provisioner_outcomes_total", "result" => "applied")
            .increment(1);
        Ok(Applied::Done)
    }

    /// Creates (or links) the platform user for a CRM user exactly once, even when replicas race:
    /// the identity row is inserted first and then locked, so only one transaction finds it
    /// without a user and creates one; the others wait for it and reuse its user.
    async fn provision_user(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        company_id: Uuid,
        integration_id: Uuid,
        o: &WorkflowOutcome,
        crm_user_id: &str,
    ) -> Result<Uuid, Failure> {
        ensure_identity(tx, company_id, integration_id, o, crm_user_id)
            .await
            .map_err(db)?;
        self.provision_identity(tx, company_id, integration_id, crm_user_id, &o.outcome_id)
            .await
    }

    /// The part of [`Self::provision_user`] that needs no outcome, shared with auto-sync being
    /// turned on (`crate::auto_sync`): the identity row must exist. Messages are staged in the
    /// outbox under `staged_under`, which the caller publishes after commit.
    pub(crate) async fn provision_identity(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        company_id: Uuid,
        integration_id: Uuid,
        crm_user_id: &str,
        staged_under: &str,
    ) -> Result<Uuid, Failure> {
        let (existing, name, email): (Option<Uuid>, Option<String>, Option<String>) =
            sqlx::query_as(
                "SELECT user_id, display_name, email FROM crm_identities
             WHERE integration_id = $1 AND crm_user_id = $2 FOR UPDATE",
            )
            .bind(integration_id)
            .bind(crm_user_id)
            .fetch_one(&mut **tx)
            .await
            .map_err(db)?;
        if let Some(user_id) = existing {
            return Ok(user_id);
        }
        let display_name = name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| crm_user_id.to_owned());
        let email = email.filter(|e| !e.trim().is_empty());

        let same_email: Option<(Uuid, String)> = match &email {
            Some(email) => sqlx::query_as(
                "SELECT id, status FROM users WHERE company_id = $1 AND lower(email) = lower($2)",
            )
            .bind(company_id)
            .bind(email)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?,
            None => None,
        };
        let (user_id, status, linked) = match same_email {
            Some((id, status)) => (id, status, true),
            None => {
                let id = derived_id(&["user", &integration_id.to_string(), crm_user_id]);
                sqlx::query(
                    "INSERT INTO users (id, company_id, display_name, email, status, source)
                     VALUES ($1, $2, $3, $4, 'pending', 'auto_sync')",
                )
                .bind(id)
                .bind(company_id)
                .bind(&display_name)
                .bind(&email)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
                (id, "pending".to_owned(), false)
            }
        };
        sqlx::query(
            "UPDATE crm_identities SET user_id = $3, updated_at = now()
             WHERE integration_id = $1 AND crm_user_id = $2",
        )
        .bind(integration_id)
        .bind(crm_user_id)
        .bind(user_id)
        .execute(&mut **tx)
        .await
        .map_err(db)?;

        let provisioned = UserProvisioned {
            event_id: derived_id(&["user-provisioned", &integration_id.to_string(), crm_user_id])
                .to_string(),
            company_id: company_id.to_string(),
            user_id: user_id.to_string(),
            integration_id: integration_id.to_string(),
            crm_user_id: crm_user_id.to_owned(),
            display_name,
            email: email.unwrap_or_default(),
            status: if status == "active" {
                UserStatus::Active
            } else {
                UserStatus::Pending
            } as i32,
            linked_existing_user: linked,
            provisioned_at: Some(to_timestamp(Utc::now())),
        };
        outbox::stage(
            tx,
            staged_under,
            &Pending {
                topic: self.users_topic.clone(),
                key: format!("{company_id}/{user_id}"),
                message_id: provisioned.event_id.clone(),
                payload: provisioned.encode_to_vec(),
            },
        )
        .await
        .map_err(db)?;
        metrics::counter!("crm_sync_users_provisioned_total", "result" => if linked { "linked" } else { "created" })
            .increment(1);
        tracing::info!(%user_id, %integration_id, crm_user_id, linked, "provisioned platform user");

        self.attach_unmapped(
            tx,
            company_id,
            integration_id,
            crm_user_id,
            user_id,
            staged_under,
        )
        .await?;
        Ok(user_id)
    }

    /// Activities kept while the identity was unmapped now belong to the user.
    async fn attach_unmapped(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        company_id: Uuid,
        integration_id: Uuid,
        crm_user_id: &str,
        user_id: Uuid,
        outcome_id: &str,
    ) -> Result<(), Failure> {
        #[derive(sqlx::FromRow)]
        struct Attached {
            id: Uuid,
            workflow_id: Uuid,
            activity_type: String,
            value: Decimal,
            activity_date: DateTime<Utc>,
            object_type: String,
            record_id: String,
            last_event_id: String,
        }
        let attached: Vec<Attached> = sqlx::query_as(
            "UPDATE activities SET user_id = $3, updated_at = now()
             WHERE integration_id = $1 AND crm_user_id = $2 AND user_id IS NULL AND state = 'recorded'
             RETURNING id, workflow_id, activity_type, value, activity_date, object_type, record_id, last_event_id",
        )
        .bind(integration_id)
        .bind(crm_user_id)
        .bind(user_id)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        if attached.is_empty() {
            return Ok(());
        }
        let visible = on_a_team(tx, user_id).await.map_err(db)?;
        for a in &attached {
            let change = ActivityChanged {
                change_id: derived_id(&[
                    "activity-attached",
                    &a.id.to_string(),
                    &user_id.to_string(),
                ])
                .to_string(),
                activity_id: a.id.to_string(),
                company_id: company_id.to_string(),
                user_id: user_id.to_string(),
                integration_id: integration_id.to_string(),
                workflow_id: a.workflow_id.to_string(),
                activity_type: a.activity_type.clone(),
                value: a.value.to_string(),
                activity_date: Some(to_timestamp(a.activity_date)),
                state: ActivityState::Recorded as i32,
                visible,
                object_type: a.object_type.clone(),
                record_id: a.record_id.clone(),
                source_event_id: a.last_event_id.clone(),
                changed_at: Some(to_timestamp(Utc::now())),
            };
            self.stage_activity(tx, outcome_id, &change).await?;
        }
        tracing::info!(%user_id, attached = attached.len(), "attached unmapped activities");
        Ok(())
    }

    async fn stage_activity(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        outcome_id: &str,
        change: &ActivityChanged,
    ) -> Result<(), Failure> {
        outbox::stage(
            tx,
            outcome_id,
            &Pending {
                topic: self.activities_topic.clone(),
                key: format!("{}/{}", change.company_id, change.user_id),
                message_id: change.change_id.clone(),
                payload: change.encode_to_vec(),
            },
        )
        .await
        .map_err(db)
    }
}

async fn remember_owner(
    tx: &mut Transaction<'_, Postgres>,
    company_id: Uuid,
    integration_id: Uuid,
    o: &WorkflowOutcome,
    owner: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO record_owners (company_id, integration_id, object_type, record_id, crm_user_id)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (integration_id, object_type, record_id) DO UPDATE
             SET crm_user_id = EXCLUDED.crm_user_id, updated_at = now()
             WHERE record_owners.crm_user_id <> EXCLUDED.crm_user_id",
    )
    .bind(company_id)
    .bind(integration_id)
    .bind(&o.object_type)
    .bind(&o.record_id)
    .bind(owner)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn last_known_owner(
    tx: &mut Transaction<'_, Postgres>,
    integration_id: Uuid,
    o: &WorkflowOutcome,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT crm_user_id FROM record_owners WHERE integration_id = $1 AND object_type = $2 AND record_id = $3",
    )
    .bind(integration_id)
    .bind(&o.object_type)
    .bind(&o.record_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|(id,)| id))
}

async fn mapped_user(
    tx: &mut Transaction<'_, Postgres>,
    integration_id: Uuid,
    crm_user_id: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    let row: Option<(Option<Uuid>,)> = sqlx::query_as(
        "SELECT user_id FROM crm_identities WHERE integration_id = $1 AND crm_user_id = $2",
    )
    .bind(integration_id)
    .bind(crm_user_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.and_then(|(id,)| id))
}

async fn ensure_identity(
    tx: &mut Transaction<'_, Postgres>,
    company_id: Uuid,
    integration_id: Uuid,
    o: &WorkflowOutcome,
    crm_user_id: &str,
) -> Result<(), sqlx::Error> {
    let (name, email) = o
        .owner
        .as_ref()
        .filter(|u| u.crm_user_id == crm_user_id)
        .map(|u| (u.name.as_str(), u.email.as_str()))
        .unwrap_or_default();
    sqlx::query(
        "INSERT INTO crm_identities (company_id, integration_id, crm_user_id, display_name, email)
         VALUES ($1, $2, $3, NULLIF($4, ''), NULLIF($5, ''))
         ON CONFLICT (integration_id, crm_user_id) DO UPDATE SET
             display_name = COALESCE(crm_identities.display_name, EXCLUDED.display_name),
             email = COALESCE(crm_identities.email, EXCLUDED.email)",
    )
    .bind(company_id)
    .bind(integration_id)
    .bind(crm_user_id)
    .bind(name)
    .bind(email)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn on_a_team(tx: &mut Transaction<'_, Postgres>, user_id: Uuid) -> Result<bool, sqlx::Error> {
    let (on,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM team_memberships WHERE user_id = $1)")
            .bind(user_id)
            .fetch_one(&mut **tx)
            .await?;
    Ok(on)
}
