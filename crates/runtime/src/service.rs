//! The shape every service runs in ([`Service`]): its main work (a consume loop, an API server)
//! and its background tasks (outbox relays, change listeners, lag readers, expiry), with the ops
//! endpoints served around them. SIGTERM starts the drain; the grace period bounds it; the ops
//! endpoints answer until the main work and the background tasks have finished, so that probes
//! see the drain. If the ops server itself stops first, the orchestrator could no longer see the
//! service: it is stopped (drained like on SIGTERM) and exits non-zero, so that it is restarted;
//! a background task that ends or panics before shutdown does the same (see `crate::supervise`).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ops::Readiness;
use crate::server::{Limits, serve};
use crate::settings::{HttpSettings, Settings};
use crate::supervise::Supervisor;

/// One running service: its termination token (cancelled on SIGTERM or SIGINT), its grace
/// period and its background tasks.
pub struct Service {
    name: &'static str,
    shutdown: CancellationToken,
    grace: Duration,
    background: Supervisor,
}

impl Service {
    /// Starts watching for SIGTERM and SIGINT.
    pub fn new(name: &'static str, settings: &Settings) -> Service {
        Service::with_token(
            name,
            crate::shutdown::on_termination_signal(),
            settings.shutdown.grace_period(),
        )
    }

    fn with_token(name: &'static str, shutdown: CancellationToken, grace: Duration) -> Service {
        Service {
            name,
            background: Supervisor::new(shutdown.clone()),
            shutdown,
            grace,
        }
    }

    /// The token every part of the service watches: cancelled on SIGTERM, when a background
    /// task fails, or when the ops server stops.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The background tasks, to spawn on (see [`Supervisor::spawn`]).
    pub fn background(&mut self) -> &mut Supervisor {
        &mut self.background
    }

    /// Runs `main` and the background tasks with `ops` served around them, until `main` has
    /// returned and the tasks have ended after shutdown, or until the grace period has passed
    /// since shutdown started (what is still running then is dropped). Returns `main`'s result,
    /// or why the service had to stop (a background task or the ops server failed).
    pub async fn run<F>(self, ops: OpsServer, main: F) -> anyhow::Result<()>
    where
        F: Future<Output = anyhow::Result<()>>,
    {
        let Service {
            name,
            shutdown,
            grace,
            background,
        } = self;
        let result = run_with_ops(ops, &shutdown, grace, background.run(main)).await;
        match &result {
            Ok(()) => tracing::info!(service = name, "stopped"),
            Err(error) => {
                tracing::error!(service = name, error = format!("{error:#}"), "stopped")
            }
        }
        result
    }
}

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
async fn run_with_ops<F>(
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
    async fn background_tasks_finish_what_they_hold_before_the_service_exits() {
        let (ops, _) = ops().await;
        let shutdown = CancellationToken::new();
        let mut service = Service::with_token("test", shutdown.clone(), Duration::from_secs(5));
        let written = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let token = service.shutdown();
        let flag = written.clone();
        service.background().spawn("trail writer", async move {
            token.cancelled().await;
            // Writing what is queued takes a moment after shutdown.
            tokio::time::sleep(Duration::from_millis(200)).await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        shutdown.cancel();
        service.run(ops, async { Ok(()) }).await.unwrap();
        assert!(
            written.load(std::sync::atomic::Ordering::SeqCst),
            "the task was dropped before it finished"
        );
    }

    #[tokio::test]
    async fn background_tasks_that_outlive_the_grace_period_are_dropped() {
        let (ops, _) = ops().await;
        let shutdown = CancellationToken::new();
        let mut service = Service::with_token("test", shutdown.clone(), Duration::from_millis(300));
        service
            .background()
            .spawn("stuck", std::future::pending::<()>());
        service
            .background()
            .spawn_until_shutdown("restorer", std::future::pending::<()>());
        shutdown.cancel();
        let started = std::time::Instant::now();
        service.run(ops, async { Ok(()) }).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn tasks_that_hold_nothing_do_not_delay_the_exit() {
        let (ops, _) = ops().await;
        let shutdown = CancellationToken::new();
        let mut service = Service::with_token("test", shutdown.clone(), Duration::from_secs(30));
        service
            .background()
            .spawn_until_shutdown("restorer", std::future::pending::<()>());
        shutdown.cancel();
        let started = std::time::Instant::now();
        service.run(ops, async { Ok(()) }).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
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
