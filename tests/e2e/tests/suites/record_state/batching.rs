//! How many events the evaluator commits together: a backlog fills its transactions up to
//! `evaluator.batch_max_events`, and the transaction-size histogram shows it; where each
//! transaction's time went is measured per phase.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_committed_in_transactions_of_at_most_the_configured_events_each_phase_timed()
{
    let env = TestEnv::new("state-batching").await;
    let tenant = Tenant::create(&env.pool, "batching", true, true).await;
    // Waiting before the evaluator starts: a backlog, which the default (250) would commit in
    // one or two transactions.
    let events: Vec<CrmEvent> = (0..60)
        .map(|i| {
            let record = format!("006BATCH{i:03}");
            let fields = [("StageName", "Prospecting")];
            delta(&tenant, CrmKind::Salesforce, &record, &fields, 100 + i)
        })
        .collect();
    Feed::new(&env, &tenant).all(&events).await;
    let evaluator = env
        .start_service(
            "workflow-evaluator",
            "workflow-evaluator",
            &[("CRM_SYNC__EVALUATOR__BATCH_MAX_EVENTS", "10")],
        )
        .await;
    evaluated(&evaluator, 60.0).await;
    let transactions = metric(&evaluator, "crm_sync_transaction_messages_count", &[]).await;
    let consumed = metric(&evaluator, "crm_sync_transaction_messages_sum", &[]).await;
    let within = metric(
        &evaluator,
        "crm_sync_transaction_messages_bucket",
        &["le=\"10\""],
    )
    .await;
    assert_eq!(consumed, 60.0, "every event committed once");
    assert!(
        transactions >= 6.0,
        "{transactions} transactions for 60 events"
    );
    assert_eq!(
        within, transactions,
        "every transaction holds at most 10 events"
    );
    // The last transaction's `settle` is recorded just after its events are counted.
    for phase in ["fill", "room", "hand_over", "deliver", "commit", "settle"] {
        let label = format!("phase=\"{phase}\"");
        eventually(&format!("{phase} timed per transaction"), WAIT, || async {
            let timed = metric(
                &evaluator,
                "crm_sync_transaction_phase_seconds_count",
                &[&label],
            )
            .await;
            (timed >= transactions).then_some(())
        })
        .await;
    }
}
