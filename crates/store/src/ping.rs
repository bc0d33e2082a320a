//! Whether PostgreSQL answers, and if not, why: for `/readyz` and the CLI's first connection.
//!
//! The pool retries a refused connection until its acquire timeout and then reports only that
//! it timed out ("pool timed out while waiting for an open connection"), and `/readyz` cuts every
//! check at 3 s, before that: PostgreSQL down or a wrong host both read "timed out". So a ping
//! that gets no connection from the pool soon opens one itself, outside the pool, and reports
//! that connection's error with the address it tried.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, PgPool};

/// How long the readiness check waits for the pool's answer before asking PostgreSQL directly:
/// with [`DIRECT_WAIT`], within `/readyz`'s 3 s.
const POOL_WAIT: Duration = Duration::from_millis(1_500);
/// How long the connection opened outside the pool may take.
const DIRECT_WAIT: Duration = Duration::from_secs(1);

/// A `/readyz` check: PostgreSQL answers a query.
pub fn readiness_check(
    pool: &PgPool,
) -> impl Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync + 'static {
    let pool = pool.clone();
    move || {
        let pool = pool.clone();
        Box::pin(async move { check(&pool, Some(POOL_WAIT)).await })
    }
}

/// `Ok` when PostgreSQL answers a query through the pool (within its acquire timeout), or
/// accepts a new connection when the pool had none to give; else what is wrong, in words.
pub async fn ping(pool: &PgPool) -> Result<(), String> {
    check(pool, None).await
}

async fn check(pool: &PgPool, wait: Option<Duration>) -> Result<(), String> {
    let query = sqlx::query("SELECT 1").execute(pool);
    let answer = match wait {
        Some(wait) => tokio::time::timeout(wait, query).await.ok(),
        None => Some(query.await),
    };
    match answer {
        Some(Ok(_)) => Ok(()),
        Some(Err(sqlx::Error::PoolTimedOut)) | None => {
            connect_directly(&pool.connect_options()).await
        }
        Some(Err(e)) => Err(format!("PostgreSQL: {e}")),
    }
}

async fn connect_directly(options: &PgConnectOptions) -> Result<(), String> {
    let target = address(options);
    match tokio::time::timeout(DIRECT_WAIT, options.connect()).await {
        Ok(Ok(connection)) => {
            // Reachable: the pool's connections are all in use, which is load, not an outage.
            let _ = connection.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(format!("PostgreSQL at {target}: {e}")),
        Err(_) => Err(format!(
            "PostgreSQL at {target}: no connection (timed out, through the pool and directly)"
        )),
    }
}

fn address(options: &PgConnectOptions) -> String {
    match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port nothing listens on: bound, then released.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
        listener.local_addr().expect("its address").port()
    }

    #[tokio::test]
    async fn postgres_down_is_reported_as_refused_at_its_address_within_the_probe() {
        let port = closed_port();
        let url = format!("postgres://u:secret@127.0.0.1:{port}/db");
        let pool = crate::pool(&url, 2, Duration::from_secs(5)).expect("a lazy pool");
        let started = std::time::Instant::now();
        let error = check(&pool, Some(POOL_WAIT))
            .await
            .expect_err("nothing listens there");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "within /readyz's 3 s: {:?}",
            started.elapsed()
        );
        assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
        assert!(error.to_lowercase().contains("refused"), "{error}");
        assert!(!error.contains("secret"), "{error}");

        // The CLI's ping waits the pool's own acquire timeout (a slow link's first connection
        // may take longer than the probe's), then says the same.
        let pool = crate::pool(&url, 2, Duration::from_millis(500)).expect("a lazy pool");
        let error = ping(&pool).await.expect_err("nothing listens there");
        assert!(error.to_lowercase().contains("refused"), "{error}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_reported_as_such_within_the_probe() {
        // Accepts TCP connections (the backlog) but never speaks.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
        let port = listener.local_addr().expect("its address").port();
        let url = format!("postgres://u@127.0.0.1:{port}/db?sslmode=disable");
        let pool = crate::pool(&url, 2, Duration::from_secs(5)).expect("a lazy pool");
        let started = std::time::Instant::now();
        let error = check(&pool, Some(POOL_WAIT))
            .await
            .expect_err("no PostgreSQL there");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(error.contains("no connection (timed out"), "{error}");
        drop(listener);
    }
}
