//! Consumer lag per partition, from librdkafka's statistics (`statistics.interval.ms`), exported
//! as `crm_sync_consumer_lag{topic,partition}`: how many records of a partition the service has
//! not picked up yet (not fetched, or fetched and queued). The first thing to look at when the
//! pipeline falls behind.
//!
//! Counted from the consumer's position rather than as `end - committed`: a transactional
//! consumer commits through its producer, which the consumer's statistics never see, and the
//! markers transactions leave in a partition would make a consumer that has read everything
//! report one record per marker. Messages in the service's hands count too, from the consume
//! loop's own buffers (librdkafka's offsets cannot tell them: past the last stored offset there
//! may be only a marker): a partition's worker buffers up to a thousand messages, so a handler
//! stuck retrying would otherwise read as no lag at all (seen: 3,000 outcomes waiting behind a
//! stopped PostgreSQL, lag 0 on every partition). The transactional loop has no such buffers.

use rdkafka::statistics::{Partition, Statistics};

/// How often librdkafka reports statistics, i.e. how fresh the lag gauge is.
pub const STATISTICS_INTERVAL_MS: u32 = 5_000;

/// Lag of each partition of the subscribed topics: `Some` for the partitions this consumer owns,
/// `None` for the others (their owner reports them), sorted by topic and partition.
/// `in_hand` says how many messages of a partition the service holds and has not finished.
pub fn lag_by_partition(
    statistics: &Statistics,
    in_hand: impl Fn(&str, i32) -> i64,
) -> Vec<(String, i32, Option<i64>)> {
    let mut lags: Vec<(String, i32, Option<i64>)> = statistics
        .topics
        .values()
        .flat_map(|topic| {
            topic
                .partitions
                .values()
                // librdkafka's internal "unassigned" partition is -1.
                .filter(|p| p.partition >= 0)
                .map(|p| {
                    let lag = owned_lag(p).map(|lag| lag + in_hand(&topic.topic, p.partition));
                    (topic.topic.clone(), p.partition, lag)
                })
        })
        .collect();
    lags.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    lags
}

fn owned_lag(p: &Partition) -> Option<i64> {
    if !p.desired || p.fetch_state == "none" {
        return None;
    }
    // read_committed consumers can only read up to the last stable offset.
    let end = if p.ls_offset >= 0 {
        p.ls_offset
    } else {
        p.hi_offset
    };
    if end < 0 {
        return None;
    }
    let valid = |offset: i64| (offset >= 0).then_some(offset);
    match valid(p.next_offset) {
        Some(next) => Some((end - next).max(0) + p.fetchq_cnt.max(0)),
        // Not fetching yet: from the committed offset, or (a new group starting at the
        // earliest offset) everything the partition retains.
        None => {
            let from = valid(p.committed_offset).unwrap_or(p.lo_offset.max(0));
            Some((end - from).max(0))
        }
    }
}

/// Sets the gauges. Partitions this consumer does not own read 0, so a revoked partition does
/// not keep reporting its last lag (aggregate replicas with `max by (topic, partition)`).
pub fn record(statistics: &Statistics, in_hand: impl Fn(&str, i32) -> i64) {
    for (topic, partition, lag) in lag_by_partition(statistics, in_hand) {
        metrics::gauge!(crate::metric_definitions::CONSUMER_LAG, "topic" => topic, "partition" => partition.to_string())
            .set(lag.unwrap_or(0) as f64);
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::statistics::Topic;

    use super::*;

    /// A partition with records 10..40 (stable) retained, fetched up to `next`, `queued` of them
    /// waiting in the fetch queue, handed to the service up to `app`, committed up to
    /// `committed` (-1001: none).
    fn partition(
        id: i32,
        state: &str,
        (next, queued, app, committed): (i64, i64, i64, i64),
    ) -> Partition {
        Partition {
            partition: id,
            desired: state != "none",
            fetch_state: state.to_owned(),
            next_offset: next,
            fetchq_cnt: queued,
            app_offset: app,
            committed_offset: committed,
            stored_offset: -1001,
            lo_offset: 10,
            hi_offset: 50,
            ls_offset: 40,
            ..Default::default()
        }
    }

    fn statistics() -> Statistics {
        let mut topic = Topic {
            topic: "crm.events.v1".into(),
            ..Default::default()
        };
        let none = (-1001, 0, -1001, -1001);
        let mut caught_up = partition(3, "active", (41, 0, 40, 40));
        // The last record (39) is followed by a transaction's commit marker (40).
        caught_up.ls_offset = 41;
        caught_up.hi_offset = 41;
        // Everything fetched and handed to the service, which is stuck on the first of 20.
        let stuck = partition(5, "active", (41, 0, 40, 20));
        for p in [
            partition(-1, "none", none),
            partition(0, "active", (39, 1, 38, 33)),
            partition(1, "none", none),
            partition(2, "active", none),
            caught_up,
            stuck,
        ] {
            topic.partitions.insert(p.partition, p);
        }
        let mut statistics = Statistics::default();
        statistics.topics.insert(topic.topic.clone(), topic);
        statistics
    }

    #[test]
    fn owned_partitions_report_records_not_handled_yet() {
        let t = "crm.events.v1".to_owned();
        assert_eq!(
            lag_by_partition(&statistics(), |_, p| if p == 5 { 20 } else { 0 }),
            vec![
                // 1 not fetched yet (39) + 1 fetched and queued (38).
                (t.clone(), 0, Some(2)),
                // Owned by another replica.
                (t.clone(), 1, None),
                // Not fetching yet, nothing committed: all 30 retained records.
                (t.clone(), 2, Some(30)),
                // Everything read; only the transaction's marker follows the last record.
                (t.clone(), 3, Some(0)),
                // All fetched, but 20 in the service's hands.
                (t, 5, Some(20)),
            ]
        );
    }
}
