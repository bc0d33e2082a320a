//! Background tasks watched by the service that spawned them (see `crate::service::Service`). A
//! background task (an outbox relay, a change listener) is meant to run until shutdown; if one
//! ends earlier, by returning or by panicking, the service would keep answering `/readyz` while
//! running on stale state. Instead the service drains and exits non-zero with the reason logged,
//! so that the orchestrator restarts it. At shutdown the tasks are given the time the grace
//! period leaves to finish what they hold (write what is queued, hand back a lease).

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

/// A background task ended before shutdown was requested.
#[derive(Debug, thiserror::Error)]
pub enum TaskFailure {
    #[error("background task `{task}` ended unexpectedly")]
    Returned { task: &'static str },
    #[error("background task `{task}` panicked: {message}")]
    Panicked { task: &'static str, message: String },
}

/// The service's background tasks, all stopped by one shutdown token.
pub struct Supervisor {
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
    shutdown: CancellationToken,
}

impl Supervisor {
    /// `shutdown` is the service's termination token: the supervisor cancels it when a task
    /// fails, so that the main work drains as on SIGTERM.
    pub fn new(shutdown: CancellationToken) -> Supervisor {
        Supervisor {
            tasks: JoinSet::new(),
            names: HashMap::new(),
            shutdown,
        }
    }

    /// Spawns `task`, which must run until the shutdown token is cancelled and then end soon:
    /// the service waits for it before it exits (bounded by the grace period).
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let id = self.tasks.spawn(task).id();
        self.names.insert(id, name);
    }

    /// Spawns `task`, which does not watch the shutdown token and holds nothing to finish: it
    /// is dropped when shutdown starts.
    pub fn spawn_until_shutdown<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        self.spawn(name, async move {
            tokio::select! {
                () = task => {}
                () = shutdown.cancelled() => {}
            }
        });
    }

    /// Runs the service's main work while watching the background tasks, then waits for the
    /// tasks to end (the caller bounds the wait). A task that ends before shutdown makes this
    /// return an error naming it (after the main work drained); otherwise the main work's own
    /// result is returned.
    pub async fn run<F>(mut self, main: F) -> anyhow::Result<()>
    where
        F: Future<Output = anyhow::Result<()>>,
    {
        tokio::pin!(main);
        let mut failure = None;
        let result = loop {
            tokio::select! {
                result = &mut main => break result,
                Some(ended) = self.tasks.join_next_with_id(), if failure.is_none() => {
                    if let Some(error) = self.unexpected(ended) {
                        tracing::error!(error = %error, "a background task failed: stopping the service so that it is restarted");
                        failure = Some(error);
                        self.shutdown.cancel();
                    }
                }
            }
        };
        // The main work has stopped: the tasks see the same token and end.
        self.shutdown.cancel();
        self.wait_for_tasks(&mut failure).await;
        match failure {
            Some(error) => Err(anyhow::Error::new(error).context(match result {
                Ok(()) => "the service stopped because a background task failed".to_owned(),
                Err(main) => format!(
                    "the service stopped because a background task failed (and then: {main:#})"
                ),
            })),
            None => result,
        }
    }

    /// Waits for every task to end, keeping the first failure (a task panicking while it winds
    /// down is one).
    async fn wait_for_tasks(&mut self, failure: &mut Option<TaskFailure>) {
        while let Some(ended) = self.tasks.join_next_with_id().await {
            if let Some(error) = self.unexpected(ended) {
                tracing::error!(error = %error, "a background task failed while stopping");
                failure.get_or_insert(error);
            }
        }
        tracing::debug!("background tasks stopped");
    }

    fn unexpected(&self, ended: Result<(Id, ()), JoinError>) -> Option<TaskFailure> {
        let name = |id: Id| self.names.get(&id).copied().unwrap_or("unnamed");
        match ended {
            Ok(_) if self.shutdown.is_cancelled() => None,
            Ok((id, ())) => Some(TaskFailure::Returned { task: name(id) }),
            Err(error) => Some(TaskFailure::Panicked {
                task: name(error.id()),
                message: if error.is_panic() {
                    panic_message(error.into_panic())
                } else {
                    "cancelled".to_owned()
                },
            }),
        }
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn until_cancelled(token: &CancellationToken) -> impl Future<Output = ()> + Send + 'static {
        let token = token.clone();
        async move { token.cancelled().await }
    }

    #[tokio::test]
    async fn a_panicking_task_stops_the_service_with_an_error_naming_it() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        supervisor.spawn("healthy", until_cancelled(&shutdown));
        supervisor.spawn("workflow listener", async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            panic!("listener state corrupted");
        });
        // The main work drains when the token is cancelled, like a consumer on SIGTERM.
        let main = until_cancelled(&shutdown);
        let result = tokio::time::timeout(
            Duration::from_secs(5),
            supervisor.run(async move {
                main.await;
                Ok(())
            }),
        )
        .await
        .expect("the service must stop when a background task panics");
        let error = format!("{:#}", result.expect_err("the service must fail"));
        assert!(error.contains("`workflow listener` panicked"), "{error}");
        assert!(error.contains("listener state corrupted"), "{error}");
        assert!(shutdown.is_cancelled(), "the main work was asked to drain");
    }

    #[tokio::test]
    async fn a_task_that_returns_early_stops_the_service() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        supervisor.spawn("outbox relay", async {});
        let main = until_cancelled(&shutdown);
        let result = tokio::time::timeout(
            Duration::from_secs(5),
            supervisor.run(async move {
                main.await;
                Ok(())
            }),
        )
        .await
        .expect("the service must stop when a background task ends");
        let error = format!("{:#}", result.expect_err("the service must fail"));
        assert!(
            error.contains("`outbox relay` ended unexpectedly"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn tasks_ending_at_shutdown_are_not_failures() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        supervisor.spawn("listener", until_cancelled(&shutdown));
        let stop = shutdown.clone();
        let result = supervisor
            .run(async move {
                stop.cancel();
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(())
            })
            .await;
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn the_main_works_error_is_returned_when_no_task_failed() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        supervisor.spawn("listener", until_cancelled(&shutdown));
        let result = supervisor
            .run(async { anyhow::bail!("consumer failed") })
            .await;
        assert_eq!(format!("{:#}", result.unwrap_err()), "consumer failed");
        assert!(shutdown.is_cancelled(), "the tasks were told to stop");
    }
}
