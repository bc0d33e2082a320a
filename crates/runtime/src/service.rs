//! The shape every service runs in: its main work (a consume loop, an API server) with the ops
//! endpoints served around it. SIGTERM starts the drain; the grace period bounds it; the ops
//! endpoints answer until the main work has finished, so that probes see the drain. If the ops
//! server itself stops first, the orchestrator could no longer see the service: it is stopped
//! (drained like on SIGTERM) and exits non-zero, so that it is restarted.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ops::Readiness;
use crate::server::{Limits, serve};
use crate::settings::HttpSettings;

/// The ops endpoints' listener, routes and limits.
pub struct OpsServer {
    pub listener: TcpListener,
    pub router: Router,
    pub limits: Limits,
}

impl OpsServer {
    /// `/healthz`, `/readyz` answering with `readiness`, and `/metrics`, on `listener`, with the
    /// service's HTTP limits.
    pub fn new(
        listener: TcpListener,
        readiness: Readiness,
        metrics: PrometheusHandle,
        http: &HttpSettings,
    ) -> OpsServer {
        OpsServer {
            listener,
            router: crate::ops::router(readiness, metrics),
            limits: http.into(),
        }
    }
}

/// Runs `main` until it returns, or until the grace period has passed since `shutdown` was
/// cancelled, with `ops` served all along. Returns `main`'s result, or the ops server's failure.
pub async fn run_with_ops<F>(
    ops: OpsServer,
    shutdown: &CancellationToken,
    grace: Duration,
    main: F,
) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let ops_stop = CancellationToken::new();
    let server = serve(ops.listener, ops.router, ops_stop.clone(), ops.limits);
    run_around(server, &ops_stop, shutdown, grace, main).await
}

/// [`run_with_ops`] with the ops server as a future (`ops_stop` stops it).
async fn run_around<S, F>(
    server: S,
    ops_stop: &CancellationToken,
    shutdown: &CancellationToken,
    grace: Duration,
    main: F,
) -> anyhow::Result<()>
where
    S: Future<Output = anyhow::Result<()>>,
    F: Future<Output = anyhow::Result<()>>,
{
    let grace_over = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::pin!(server, main, grace_over);
    let mut ops_failure: Option<anyhow::Error> = None;
    let result = loop {
        tokio::select! {
            result = &mut main => break result,
            () = &mut grace_over => {
                tracing::error!(grace_period_secs = grace.as_secs(), "in-flight work did not finish within the grace period; stopping anyway");
                break Ok(());
            }
            served = &mut server, if ops_failure.is_none() => {
                let error = match served {
                    Ok(()) => anyhow::anyhow!("the ops server stopped"),
                    Err(error) => error.context("the ops server failed"),
                };
                tracing::error!(error = format!("{error:#}"), "stopping the service so that it is restarted");
                ops_failure = Some(error);
                shutdown.cancel();
            }
        }
    };
    ops_stop.cancel();
    match ops_failure {
        Some(error) => Err(error.context("the service stopped because its ops endpoints did")),
        None => {
            if let Err(error) = server.await {
                tracing::warn!(error = format!("{error:#}"), "closing the ops server");
            }
            result
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    async fn ops() -> (OpsServer, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let router = Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        let limits = Limits {
            header_read_timeout: Duration::from_secs(1),
            body_read_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            max_connections: 4,
        };
        (
            OpsServer {
                listener,
                router,
                limits,
            },
            port,
        )
    }

    #[tokio::test]
    async fn ops_endpoints_answer_while_the_main_work_drains() {
        let (ops, port) = ops().await;
        let shutdown = CancellationToken::new();
        let main = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                // Draining: the probe below must still be answered.
                let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .await
                    .unwrap();
                let mut answer = String::new();
                stream.read_to_string(&mut answer).await.unwrap();
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                Ok(())
            }
        };
        shutdown.cancel();
        run_with_ops(ops, &shutdown, Duration::from_secs(5), main)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn main_work_that_outlives_the_grace_period_is_dropped() {
        let (ops, _) = ops().await;
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let started = std::time::Instant::now();
        run_with_ops(
            ops,
            &shutdown,
            Duration::from_millis(200),
            std::future::pending(),
        )
        .await
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn an_ops_server_that_stops_drains_the_service_and_fails_it() {
        let shutdown = CancellationToken::new();
        let drained = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let main = {
            let shutdown = shutdown.clone();
            let drained = drained.clone();
            async move {
                shutdown.cancelled().await;
                drained.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
        };
        let server = async { Err(anyhow::anyhow!("accept: too many open files")) };
        let result = tokio::time::timeout(
            Duration::from_secs(5),
            run_around(
                server,
                &CancellationToken::new(),
                &shutdown,
                Duration::from_secs(5),
                main,
            ),
        )
        .await
        .expect("the service stops without a signal");
        let error = format!("{:#}", result.unwrap_err());
        assert!(error.contains("ops endpoints"), "{error}");
        assert!(error.contains("too many open files"), "{error}");
        assert!(drained.load(std::sync::atomic::Ordering::SeqCst));
    }
}
