//! Following changes announced with PostgreSQL `NOTIFY`, without missing any.
//!
//! A notification reaches only the sessions listening when it is committed: one sent while the
//! listening connection is down (a PostgreSQL restart, a failover, a cut network) is lost for
//! good. sqlx's `PgListener::recv` reconnects on its own and says nothing, so a listener built
//! on it keeps stale state forever after an outage. [`listen`] instead treats every lost
//! connection as "anything may have changed": it reconnects, listens again, and only then asks
//! the handler to reload everything.

use std::future::Future;
use std::time::Duration;

use crm_sync_retry::Backoff;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long to wait before reconnecting: from 200 ms, doubling up to 10 s while PostgreSQL is
/// away, from 200 ms again once a session was listening.
fn reconnect_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), Duration::from_secs(10))
}

/// Why [`OnChange::resync`] is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    /// The listener has just (re)connected: notifications sent before may have been lost.
    Connected,
    /// The time the handler asked for has come.
    Due,
}

/// What a listener does with what it hears.
pub trait OnChange: Send {
    /// Reloads everything. Called once listening after every (re)connect, and when the delay it
    /// last returned has passed. Returns when to be called again unprompted (None: only after
    /// the next reconnect). Errors are the handler's to log; it asks to be called again instead.
    fn resync(&mut self, why: Resync) -> impl Future<Output = Option<Duration>> + Send;

    /// The payloads notified since the last call (sorted, without duplicates). Returns a delay
    /// after which to resync (e.g. to retry what failed), or None.
    fn changed(&mut self, payloads: Vec<String>) -> impl Future<Output = Option<Duration>> + Send;
}

/// Listens on `channels` and feeds `handler` until `shutdown`; reconnects with backoff.
pub async fn listen<H: OnChange>(
    pool: &PgPool,
    channels: &[&str],
    handler: &mut H,
    shutdown: &CancellationToken,
) {
    let mut backoff = reconnect_backoff();
    loop {
        let ended = tokio::select! {
            () = shutdown.cancelled() => return,
            ended = session(pool, channels, handler, &mut backoff) => ended,
        };
        let error = ended.error;
        if ended.listening {
            // A connection that listened was lost: the next one reloads everything. Attempts that
            // fail while PostgreSQL is away are not counted, so that the count says how often
            // connections are cut, not how long an outage lasted.
            metrics::counter!(crate::metric_definitions::LISTENER_RECONNECTS).increment(1);
            tracing::warn!(%error, ?channels, backoff = ?backoff.current(), "change listener lost its connection; reconnecting, then reloading everything");
        } else {
            tracing::warn!(%error, ?channels, backoff = ?backoff.current(), "change listener could not connect; retrying");
        }
        if !backoff.wait(shutdown).await {
            return;
        }
    }
}

/// How a connection's life ended: why, and whether it had been listening.
struct Ended {
    error: sqlx::Error,
    listening: bool,
}

/// One connection's life, from connecting until it is lost.
async fn session<H: OnChange>(
    pool: &PgPool,
    channels: &[&str],
    handler: &mut H,
    backoff: &mut Backoff,
) -> Ended {
    let not_listening = |error| Ended {
        error,
        listening: false,
    };
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(error) => return not_listening(error),
    };
    // Never reconnect behind our back: a lost connection must end this session.
    listener.eager_reconnect(false);
    if let Err(error) = listener.listen_all(channels.iter().copied()).await {
        return not_listening(error);
    }
    let error = listening(&mut listener, handler, backoff).await;
    Ended {
        error,
        listening: true,
    }
}

/// Feeds `handler` from a connection that listens, until it is lost.
async fn listening<H: OnChange>(
    listener: &mut PgListener,
    handler: &mut H,
    backoff: &mut Backoff,
) -> sqlx::Error {
    backoff.reset();
    // Listen first, then load: a change between the two is seen by the load or notified.
    let mut due = at(handler.resync(Resync::Connected).await);
    loop {
        let received = tokio::select! {
            received = listener.try_recv() => received,
            () = sleep_until(due) => {
                due = at(handler.resync(Resync::Due).await);
                continue;
            }
        };
        let first = match received {
            Ok(Some(notification)) => notification,
            Ok(None) => {
                return sqlx::Error::Protocol(
                    "the notification connection was lost (notifications sent meanwhile are lost)"
                        .into(),
                );
            }
            Err(error) => return error,
        };
        // Coalesce what is already buffered (e.g. a burst from one `crm-sync apply`).
        let mut payloads = vec![first.payload().to_owned()];
        while let Some(more) = listener.next_buffered() {
            payloads.push(more.payload().to_owned());
        }
        payloads.sort();
        payloads.dedup();
        if let Some(retry) = at(handler.changed(payloads).await) {
            due = Some(due.map_or(retry, |due| due.min(retry)));
        }
    }
}

fn at(delay: Option<Duration>) -> Option<Instant> {
    delay.map(|delay| Instant::now() + delay)
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}
