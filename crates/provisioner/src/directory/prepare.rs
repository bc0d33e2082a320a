//! Looking up, before a batch's transaction, the CRM users it is about to create accounts for.
//!
//! A partition's batch carries the outcomes of many tenants, so one CRM that hangs must not hold
//! the others, nor may a batch of many new owners wait for their lookups one after another. The
//! owners are deduplicated by (integration, CRM user id) and read in one query; the lookups run
//! concurrently, [`CONCURRENT_LOOKUPS`] at a time with the integrations taking turns, and the
//! batch waits for them until `directory.inline_deadline_ms` at most. A lookup that has not
//! answered by then is recorded exactly as a failed one (identity `pending`): the account is
//! created with what is known and completed by the background completion. Such a lookup is not
//! cancelled but left to end on its own timeout: a refresh token the CRM rotated meanwhile must
//! still be stored, and its answer waits in the client's cache for the background completion.
//! Only the batch's own waiting records its answers, so an answer arriving after the account was
//! created can never mark the identity complete behind the background completion's back.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;

use crm_sync_crm_directory::{DirectoryClient, DirectoryUser, LookupError};
use crm_sync_store::record_owners::{self, RecordKey};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;
use tracing::Instrument as _;
use uuid::Uuid;

use super::Directory;
use crate::outcome::{Kind, Outcome};

/// Lookups of one batch in flight at once: new owners are not looked up one after another, yet a
/// batch does not spend a CRM's allowance of concurrent API requests on its own.
pub(crate) const CONCURRENT_LOOKUPS: usize = 4;

/// A CRM user as the directory is asked about them: (integration, CRM user id).
type Owner = (Uuid, String);

type Answer = Result<DirectoryUser, LookupError>;

/// Why one identity is (not) looked up now.
#[derive(sqlx::FromRow)]
struct Candidate {
    integration_id: Uuid,
    crm_user_id: String,
    company_id: Uuid,
    crm: String,
    auto_sync_users: bool,
    user_id: Option<Uuid>,
    display_name: Option<String>,
    directory_email: Option<String>,
    directory_state: Option<String>,
}

impl Candidate {
    /// Whether auto-sync is about to create the identity's account without the directory's name
    /// and email.
    fn needs_lookup(&self) -> bool {
        // The directory's email is needed even when a payload carried one: only the directory's
        // may link the identity to an existing account.
        let complete = self.display_name.is_some() && self.directory_email.is_some();
        // Only the account about to be created needs it; a pending lookup is the background's.
        self.auto_sync_users
            && self.user_id.is_none()
            && !complete
            && self.directory_state.is_none()
    }
}

/// One lookup to make, with what recording its answer needs.
struct Lookup {
    company_id: Uuid,
    integration_id: Uuid,
    crm_user_id: String,
    client: Arc<DirectoryClient>,
}

impl Directory {
    /// Looks up the CRM users the batch's matched outcomes are about to create accounts for
    /// without a name or email. Never fails: problems are logged and left to the background
    /// completion.
    pub async fn prepare(self: &Arc<Self>, outcomes: &[&Outcome]) {
        let deadline = Instant::now() + self.inline_deadline;
        let result = async {
            let owners = self.owners_to_look_up(outcomes).await?;
            self.look_up(&owners, deadline).await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(
                error = format!("{e:#}"),
                "preparing the directory lookups failed; the accounts keep the names the events carry"
            );
        }
    }

    /// Looks a CRM user up before auto-sync creates their account (also when auto-sync was just
    /// turned on for identities already waiting, see `crate::auto_sync`), as for a batch of one.
    /// Does nothing when no account is about to be created or the name and email are known; a
    /// lookup that fails or does not answer in time is recorded for the background completion.
    pub async fn look_up_for_new_account(
        self: &Arc<Self>,
        integration_id: Uuid,
        crm_user_id: &str,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.inline_deadline;
        self.look_up(&[(integration_id, crm_user_id.to_owned())], deadline)
            .await
    }

    /// The CRM users the matched outcomes attribute their records to, each once, in batch order:
    /// the owner an outcome names, else its record's last known owner. An owner whose name and
    /// email the event carries is not looked up.
    async fn owners_to_look_up(&self, outcomes: &[&Outcome]) -> Result<Vec<Owner>, sqlx::Error> {
        let mut owners = Vec::new();
        let mut unnamed = Vec::new();
        for o in outcomes.iter().filter(|o| o.kind == Kind::Matched) {
            let named = o
                .owner
                .as_ref()
                .filter(|u| !u.crm_user_id.trim().is_empty());
            match named {
                Some(u) if !u.name.trim().is_empty() && !u.email.trim().is_empty() => {}
                Some(u) => owners.push((o.integration_id, u.crm_user_id.trim().to_owned())),
                None => unnamed.push(RecordKey {
                    integration_id: o.integration_id,
                    object_type: o.object_type.clone(),
                    record_id: o.record_id.clone(),
                }),
            }
        }
        if !unnamed.is_empty() {
            let mut conn = self.pool.acquire().await?;
            let known = record_owners::last_known_all(&mut conn, &unnamed).await?;
            owners.extend(
                unnamed
                    .iter()
                    .filter_map(|r| Some((r.integration_id, known.get(r)?.clone()))),
            );
        }
        Ok(distinct(owners))
    }

    /// Looks up those of `owners` who need it, and records every answer; waits until `deadline`
    /// at most, then records the rest as failed lookups.
    async fn look_up(self: &Arc<Self>, owners: &[Owner], deadline: Instant) -> anyhow::Result<()> {
        if owners.is_empty() {
            return Ok(());
        }
        let candidates = self.candidates(owners).await?;
        let lookups = self.lookups(candidates).await;
        self.run(lookups, deadline).await;
        Ok(())
    }

    /// What the database knows of each owner, in one statement. Integrations that do not exist
    /// (any more) are left out.
    async fn candidates(&self, owners: &[Owner]) -> Result<Vec<Candidate>, sqlx::Error> {
        let (integrations, users): (Vec<Uuid>, Vec<&str>) =
            owners.iter().map(|(i, u)| (*i, u.as_str())).unzip();
        sqlx::query_as(
            "SELECT k.integration_id, k.crm_user_id, i.company_id, i.crm, i.auto_sync_users,
                    ci.user_id, ci.display_name, ci.directory_email, ci.directory_state
             FROM UNNEST($1::uuid[], $2::text[]) AS k(integration_id, crm_user_id)
             JOIN integrations i ON i.id = k.integration_id
             LEFT JOIN crm_identities ci
                    ON ci.integration_id = k.integration_id AND ci.crm_user_id = k.crm_user_id",
        )
        .bind(&integrations)
        .bind(&users)
        // Planned anew each time, like the batch's own look-ups: a plan cached while the tables
        // were small would read them whole once they are not.
        .persistent(false)
        .fetch_all(&self.pool)
        .await
    }

    /// The candidates who need a lookup, each with its integration's client; an integration
    /// without usable API credentials is not asked.
    async fn lookups(&self, candidates: Vec<Candidate>) -> Vec<Lookup> {
        let mut clients: HashMap<Uuid, Option<Arc<DirectoryClient>>> = HashMap::new();
        let mut lookups = Vec::new();
        for c in candidates.into_iter().filter(Candidate::needs_lookup) {
            let client = match clients.get(&c.integration_id) {
                Some(client) => client.clone(),
                None => {
                    let client = self
                        .client(c.integration_id, &c.crm)
                        .await
                        .unwrap_or_else(|e| {
                            tracing::warn!(integration_id = %c.integration_id, error = format!("{e:#}"), "reading the integration's API credentials failed; its new accounts keep the names the events carry");
                            None
                        });
                    clients.insert(c.integration_id, client.clone());
                    client
                }
            };
            if let Some(client) = client {
                lookups.push(Lookup {
                    company_id: c.company_id,
                    integration_id: c.integration_id,
                    crm_user_id: c.crm_user_id,
                    client,
                });
            }
        }
        lookups
    }

    /// Runs the lookups, [`CONCURRENT_LOOKUPS`] at a time, recording each answer as it comes;
    /// at `deadline`, leaves those still running to finish on their own and records them and
    /// those not started as failed lookups.
    async fn run(self: &Arc<Self>, lookups: Vec<Lookup>, deadline: Instant) {
        let mut waiting: VecDeque<Lookup> = taking_turns(lookups, |l| l.integration_id).into();
        let mut in_flight: HashMap<usize, Lookup> = HashMap::new();
        let mut running = FuturesUnordered::new();
        let mut next_id = 0;
        loop {
            while in_flight.len() < CONCURRENT_LOOKUPS && Instant::now() < deadline {
                let Some(lookup) = waiting.pop_front() else {
                    break;
                };
                running.push(self.spawn_lookup(next_id, &lookup));
                in_flight.insert(next_id, lookup);
                next_id += 1;
            }
            if running.is_empty() {
                break;
            }
            match tokio::time::timeout_at(deadline, running.next()).await {
                Ok(Some((id, answer))) => {
                    if let Some(lookup) = in_flight.remove(&id) {
                        self.record_answer(&lookup, &answer).await;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        // Dropping the handles detaches the lookups still running rather than aborting them.
        drop(running);
        let cut: Vec<Lookup> = in_flight.into_values().chain(waiting).collect();
        self.defer(&cut).await;
    }

    /// Starts one lookup as a task of its own, so that it can outlive the batch's wait; the
    /// returned future yields its answer tagged with `id`.
    fn spawn_lookup(
        self: &Arc<Self>,
        id: usize,
        lookup: &Lookup,
    ) -> impl Future<Output = (usize, Answer)> + use<> {
        let directory = Arc::clone(self);
        let client = Arc::clone(&lookup.client);
        let integration_id = lookup.integration_id;
        let crm_user_id = lookup.crm_user_id.clone();
        let task = tokio::spawn(
            async move {
                let answer = client
                    .lookup_with_attempts(&crm_user_id, directory.inline_attempts)
                    .await;
                // Also when the batch stopped waiting: refused credentials are read again.
                directory.forget_refused(integration_id, &answer);
                answer
            }
            .in_current_span(),
        );
        async move {
            let answer = task.await.unwrap_or_else(|e| {
                Err(LookupError::Unavailable(format!("the lookup ended: {e}")))
            });
            (id, answer)
        }
    }

    /// Stores an answer the batch waited for on the identity.
    async fn record_answer(&self, lookup: &Lookup, answer: &Answer) {
        let (integration_id, crm_user_id) = (lookup.integration_id, lookup.crm_user_id.as_str());
        match answer {
            Ok(user) => {
                tracing::info!(%integration_id, crm_user_id, found_email = user.email.is_some(), "looked the CRM user up before creating the account")
            }
            Err(e) => {
                tracing::warn!(%integration_id, crm_user_id, error = %e, "the CRM user could not be looked up; the account is created without and completed later")
            }
        }
        if let Err(e) = self
            .record(lookup.company_id, integration_id, crm_user_id, 0, answer)
            .await
        {
            tracing::warn!(%integration_id, crm_user_id, error = %e, "storing the CRM user's lookup failed; the account keeps the names the events carry");
        }
    }

    /// Records the lookups the batch stopped waiting for as failed ones, so that the background
    /// completion looks them up again; warns once per integration.
    async fn defer(&self, cut: &[Lookup]) {
        if cut.is_empty() {
            return;
        }
        let deadline_ms = self.inline_deadline.as_millis() as u64;
        let mut per_integration: BTreeMap<Uuid, usize> = BTreeMap::new();
        for lookup in cut {
            *per_integration.entry(lookup.integration_id).or_default() += 1;
            metrics::counter!(crate::metric_definitions::DIRECTORY_DEFERRED, "crm" => lookup.client.crm().as_str())
                .increment(1);
        }
        for (integration_id, lookups) in per_integration {
            tracing::warn!(%integration_id, lookups, deadline_ms, "the CRM's user directory did not answer within directory.inline_deadline_ms; the accounts are created with what is known and completed in the background");
        }
        let unanswered: Answer = Err(LookupError::Unavailable(format!(
            "no answer within directory.inline_deadline_ms ({deadline_ms} ms)"
        )));
        futures::stream::iter(cut)
            .for_each_concurrent(CONCURRENT_LOOKUPS, |lookup| {
                let unanswered = &unanswered;
                async move {
                    let (integration_id, crm_user_id) =
                        (lookup.integration_id, lookup.crm_user_id.as_str());
                    if let Err(e) = self
                        .record(lookup.company_id, integration_id, crm_user_id, 0, unanswered)
                        .await
                    {
                        tracing::error!(%integration_id, crm_user_id, error = %e, "marking the CRM user for the background lookup failed; the account keeps the names the events carry");
                    }
                }
            })
            .await;
    }
}

/// `owners` without repeats, in order of first appearance.
fn distinct(mut owners: Vec<Owner>) -> Vec<Owner> {
    let mut seen = HashSet::new();
    owners.retain(|owner| seen.insert(owner.clone()));
    owners
}

/// `items` reordered so that their integrations take turns, each in order of first appearance:
/// every integration's first lookup starts before any integration's second, so a CRM that hangs
/// holds only the concurrent lookups the other integrations leave free.
fn taking_turns<T>(items: Vec<T>, integration: impl Fn(&T) -> Uuid) -> Vec<T> {
    let total = items.len();
    let mut queues: Vec<(Uuid, VecDeque<T>)> = Vec::new();
    for item in items {
        let id = integration(&item);
        match queues.iter_mut().find(|(q, _)| *q == id) {
            Some((_, queue)) => queue.push_back(item),
            None => queues.push((id, VecDeque::from([item]))),
        }
    }
    let mut ordered = Vec::with_capacity(total);
    while !queues.is_empty() {
        queues.retain_mut(|(_, queue)| {
            if let Some(item) = queue.pop_front() {
                ordered.push(item);
            }
            !queue.is_empty()
        });
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrations_take_turns_in_order_of_first_appearance() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let items = vec![(a, 1), (a, 2), (a, 3), (b, 1), (a, 4), (c, 1), (b, 2)];
        let ordered = taking_turns(items, |(integration, _)| *integration);
        assert_eq!(
            ordered,
            vec![(a, 1), (b, 1), (c, 1), (a, 2), (b, 2), (a, 3), (a, 4)]
        );
        assert!(taking_turns(Vec::<(Uuid, u8)>::new(), |(i, _)| *i).is_empty());
    }

    #[test]
    fn each_owner_is_looked_up_once() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let owners = vec![
            (a, "u1".to_owned()),
            (b, "u1".to_owned()),
            (a, "u1".to_owned()),
            (a, "u2".to_owned()),
        ];
        assert_eq!(
            distinct(owners),
            vec![
                (a, "u1".to_owned()),
                (b, "u1".to_owned()),
                (a, "u2".to_owned())
            ]
        );
    }

    #[test]
    fn only_an_account_about_to_be_created_without_the_directory_is_looked_up() {
        let new = || Candidate {
            integration_id: Uuid::from_u128(1),
            crm_user_id: "u1".into(),
            company_id: Uuid::from_u128(9),
            crm: "salesforce".into(),
            auto_sync_users: true,
            user_id: None,
            display_name: None,
            directory_email: None,
            directory_state: None,
        };
        assert!(new().needs_lookup());
        // A payload's name alone is not enough: only the directory's email links accounts.
        assert!(
            Candidate {
                display_name: Some("Jane".into()),
                ..new()
            }
            .needs_lookup()
        );
        let cases = [
            Candidate {
                auto_sync_users: false,
                ..new()
            },
            Candidate {
                user_id: Some(Uuid::from_u128(5)),
                ..new()
            },
            Candidate {
                display_name: Some("Jane".into()),
                directory_email: Some("jane@example.com".into()),
                ..new()
            },
            Candidate {
                directory_state: Some("pending".into()),
                ..new()
            },
        ];
        for case in cases {
            assert!(!case.needs_lookup());
        }
    }
}
