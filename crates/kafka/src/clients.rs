//! Client configurations with the settings our guarantees depend on.

use anyhow::Context as _;
use rdkafka::producer::FutureProducer;

use crm_sync_runtime::settings::KafkaSettings;

use crate::consumer::OffsetCommits;
pub use crate::consumer::ServiceConsumer;
pub use crate::security::{Role, base_config, validate};

/// Every producer of the services: its connection failures are classified and rate-limited
/// (see `crate::connection`) instead of logged once per reconnect.
pub type ServiceProducer = FutureProducer<crate::connection::ReportingContext>;

/// An idempotent producer that reports success only once all in-sync replicas have the message.
/// It lingers 5 ms so that many concurrent senders (ingest's requests) share produce requests.
pub fn producer(settings: &KafkaSettings, client_id: &str) -> anyhow::Result<ServiceProducer> {
    producer_with_linger(settings, client_id, 5)
}

/// [`producer`] with its own `linger.ms`. A writer that hands over everything it has at once and
/// then waits for the acknowledgements (the provisioner publishes a whole batch after commit)
/// wants a linger just long enough for what it hands over to leave together: every millisecond
/// is added to each batch's latency.
pub fn producer_with_linger(
    settings: &KafkaSettings,
    client_id: &str,
    linger_ms: u32,
) -> anyhow::Result<ServiceProducer> {
    base_config(settings, Role::Producer)
        .set("client.id", client_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", linger_ms.to_string())
        .set("compression.type", "lz4")
        .set_bounded_buffer()
        .set(
            "delivery.timeout.ms",
            settings.delivery_timeout_ms.to_string(),
        )
        .create_with_context(crate::connection::ReportingContext)
        .with_context(|| format!("creating Kafka producer for {}", settings.brokers))
}

/// librdkafka's own `message.max.bytes` when `kafka.librdkafka_options` does not set it.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// The largest message the services' producers take (`message.max.bytes`, as configured): a
/// larger one is refused when produced, and produced again it is refused again.
pub fn max_message_bytes(settings: &KafkaSettings) -> usize {
    base_config(settings, Role::Producer)
        .get("message.max.bytes")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES)
}

/// Unsent messages a producer may hold, KiB (librdkafka's default is 1 GiB). A full buffer makes
/// the sender wait until deliveries free space (see `crate::txn_producer::enqueue`), so a
/// burst costs time instead of memory.
pub const PRODUCER_BUFFER_KIB: &str = "16384";

/// What a consumer fetches ahead of its handler at most ([`BoundedMemory::set_bounded_prefetch`]).
pub const PREFETCH_BOUNDS: [(&str, &str); 5] = [
    ("queued.min.messages", "2000"),
    // KiB queued ahead, and what one fetch brings per partition (a larger single batch is still
    // fetched). Small, so that few decompressed batches are held at once.
    ("queued.max.messages.kbytes", "256"),
    ("fetch.message.max.bytes", "131072"),
    // Per fetch, all partitions.
    ("fetch.max.bytes", "4194304"),
    // Once the queue is full, librdkafka waits this long before fetching again (its default is
    // a second): with queues this small, a consumer in a backlog emptied its queue long before
    // and waited; bounded at 1 s the provisioner lost 20-37 % of its outcomes/s.
    ("fetch.queue.backoff.ms", "10"),
];

/// What one fetch brings per partition for a consumer whose offsets commit in transactions (the
/// evaluator), in place of [`PREFETCH_BOUNDS`]' 128 KiB. The limit counts compressed bytes, so
/// what a fetch holds decompressed grows with how well the events compress: written in name
/// order (as ingest writes them), the load script's events take half the bytes on the broker
/// they took in any order, and the evaluator's peak in a 100,000-event backlog went from 62 to
/// 66-68 MiB at 128 KiB; at 64 KiB it is 60-62 MiB at the same events per second. The
/// provisioner keeps 128 KiB: at 64 KiB it applied a backlog at least a quarter slower (14,652
/// and 15,587 outcomes/s against over 21,170).
pub const TRANSACTIONAL_FETCH_BYTES: &str = "65536";

/// Memory bounds of every client: crm-sync's defaults, which an operator may still tune through
/// `kafka.librdkafka_options` (a value given there is kept).
pub trait BoundedMemory {
    /// Bounds what a consumer fetches ahead of its handler. librdkafka's defaults let each
    /// partition queue 100,000 messages or 64 MiB before fetching stops, and one fetch bring
    /// 50 MiB: a consumer behind by a backlog (a provisioner catching up) held about 130 MB.
    /// What is queued is counted uncompressed, but a fetched LZ4 batch is decompressed whole and
    /// stays in memory while any of its messages is queued or in the handler's hands: the
    /// evaluator held 30–45 MiB of decompressed batches in a backlog (a heap profile).
    fn set_bounded_prefetch(&mut self) -> &mut Self;
    /// Bounds a producer's unsent messages ([`PRODUCER_BUFFER_KIB`]).
    fn set_bounded_buffer(&mut self) -> &mut Self;
}

impl BoundedMemory for rdkafka::ClientConfig {
    fn set_bounded_prefetch(&mut self) -> &mut Self {
        for (key, value) in PREFETCH_BOUNDS {
            default_to(self, key, value);
        }
        self
    }

    fn set_bounded_buffer(&mut self) -> &mut Self {
        default_to(self, "queue.buffering.max.kbytes", PRODUCER_BUFFER_KIB)
    }
}

/// Sets `key` unless the operator's pass-through already did.
pub(crate) fn default_to<'c>(
    config: &'c mut rdkafka::ClientConfig,
    key: &str,
    value: &str,
) -> &'c mut rdkafka::ClientConfig {
    if config.get(key).is_none() {
        config.set(key, value);
    }
    config
}

/// The consumer of the at-least-once loop ([`crate::consume`]), which stores each offset once
/// the message's effects are durable; auto-commit then commits what was stored.
pub fn consumer(
    settings: &KafkaSettings,
    client_id: &str,
    group_id: &str,
) -> anyhow::Result<ServiceConsumer> {
    crate::consumer::create(settings, client_id, group_id, OffsetCommits::Stored, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_bounds_are_defaults_an_operator_may_tune() {
        let mut config = rdkafka::ClientConfig::new();
        config.set("fetch.max.bytes", "52428800");
        config.set_bounded_prefetch().set_bounded_buffer();
        assert_eq!(config.get("fetch.max.bytes"), Some("52428800"));
        assert_eq!(config.get("queued.max.messages.kbytes"), Some("256"));
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(
            config.get("queue.buffering.max.kbytes"),
            Some(PRODUCER_BUFFER_KIB)
        );
    }

    #[test]
    fn the_largest_message_is_librdkafkas_default_unless_configured() {
        let mut settings = KafkaSettings::for_brokers("b:9092");
        assert_eq!(max_message_bytes(&settings), 1_000_000);
        settings
            .librdkafka_options
            .producer
            .insert("message_max_bytes".to_owned(), "4000000".to_owned());
        assert_eq!(max_message_bytes(&settings), 4_000_000);
        settings.librdkafka_options.producer.clear();
        settings
            .librdkafka_options
            .common
            .insert("message.max.bytes".to_owned(), "2000000".to_owned());
        assert_eq!(max_message_bytes(&settings), 2_000_000);
    }
}
