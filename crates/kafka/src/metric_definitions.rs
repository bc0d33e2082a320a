//! The metrics the Kafka consume and produce core records, each named once with the description `/metrics` gives it.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Messages consumed, by topic and outcome (ok, dead_lettered, …).
pub const MESSAGES_CONSUMED: &str = "crm_sync_messages_consumed_total";
/// Time to handle one consumed message, by topic.
pub const PROCESSING: &str = "crm_sync_processing_seconds";
/// Time from a message's record timestamp to its handler starting, by topic.
pub const CONSUME_DELAY: &str = "crm_sync_consume_delay_seconds";
/// Time intake waited on a partition's full buffer, by topic.
pub const INTAKE_BLOCKED: &str = "crm_sync_consume_intake_blocked_seconds";
/// Messages handled together in one batch, by topic.
pub const BATCH_MESSAGES: &str = "crm_sync_batch_messages";
/// Batches retried one message at a time after the batch failed, by topic.
pub const BATCH_FALLBACKS: &str = "crm_sync_batch_fallbacks_total";
/// Transient failures retried, by topic.
pub const RETRIES: &str = "crm_sync_retries_total";
/// Messages dead-lettered, by topic and reason.
pub const DEAD_LETTERS: &str = "crm_sync_dead_letters_total";
/// Messages Kafka acknowledged, by topic.
pub const MESSAGES_PRODUCED: &str = "crm_sync_messages_produced_total";
/// Messages Kafka did not acknowledge, by topic.
pub const PRODUCE_ERRORS: &str = "crm_sync_produce_errors_total";
/// Kafka transactions, by result (committed, aborted).
pub const TRANSACTIONS: &str = "crm_sync_transactions_total";
/// Consumed messages per committed Kafka transaction.
pub const TRANSACTION_MESSAGES: &str = "crm_sync_transaction_messages";
/// Time of each phase of a Kafka transaction of the consume→produce loop, by phase.
pub const TRANSACTION_PHASE: &str = "crm_sync_transaction_phase_seconds";
/// Partitions assigned to this consumer, by topic.
pub const ASSIGNED_PARTITIONS: &str = "crm_sync_consumer_assigned_partitions";
/// Messages of a partition not yet handled (not fetched, or fetched and queued), by topic and partition.
pub const CONSUMER_LAG: &str = "crm_sync_consumer_lag";

pub const ALL: &[&str] = &[
    MESSAGES_CONSUMED,
    PROCESSING,
    CONSUME_DELAY,
    INTAKE_BLOCKED,
    BATCH_MESSAGES,
    BATCH_FALLBACKS,
    RETRIES,
    DEAD_LETTERS,
    MESSAGES_PRODUCED,
    PRODUCE_ERRORS,
    TRANSACTIONS,
    TRANSACTION_MESSAGES,
    TRANSACTION_PHASE,
    ASSIGNED_PARTITIONS,
    CONSUMER_LAG,
];

/// Describes the Kafka core's metrics to the installed recorder.
pub fn describe() {
    describe_counter!(
        MESSAGES_CONSUMED,
        "Messages consumed, by topic and outcome (ok, dead_lettered, …)"
    );
    describe_histogram!(
        PROCESSING,
        Unit::Seconds,
        "Time to handle one consumed message, by topic"
    );
    describe_histogram!(
        CONSUME_DELAY,
        Unit::Seconds,
        "Time from a message's record timestamp to its handler starting, by topic"
    );
    describe_histogram!(
        INTAKE_BLOCKED,
        Unit::Seconds,
        "Time intake waited on a partition's full buffer, by topic"
    );
    describe_histogram!(
        BATCH_MESSAGES,
        "Messages handled together in one batch, by topic"
    );
    describe_counter!(
        BATCH_FALLBACKS,
        "Batches retried one message at a time after the batch failed, by topic"
    );
    describe_counter!(RETRIES, "Transient failures retried, by topic");
    describe_counter!(DEAD_LETTERS, "Messages dead-lettered, by topic and reason");
    describe_counter!(MESSAGES_PRODUCED, "Messages Kafka acknowledged, by topic");
    describe_counter!(
        PRODUCE_ERRORS,
        "Messages Kafka did not acknowledge, by topic"
    );
    describe_counter!(
        TRANSACTIONS,
        "Kafka transactions, by result (committed, aborted)"
    );
    describe_histogram!(
        TRANSACTION_MESSAGES,
        "Consumed messages per committed Kafka transaction"
    );
    describe_histogram!(
        TRANSACTION_PHASE,
        Unit::Seconds,
        "Time of each phase of a consume-produce transaction, by phase (fill, room, hand_over, deliver, commit, settle)"
    );
    describe_gauge!(
        ASSIGNED_PARTITIONS,
        "Partitions assigned to this consumer, by topic"
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Messages of a partition not yet handled (not fetched, fetched and queued, or handed to the service and not done), by topic and partition"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_is_described() {
        let missing =
            crm_sync_runtime::metric_definitions::undescribed(super::ALL, super::describe);
        assert_eq!(missing, Vec::<String>::new());
    }
}
