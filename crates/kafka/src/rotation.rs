//! Kafka credentials are read once, when the clients are made: librdkafka loads the CA bundle
//! and the client certificate at client creation, and passwords are read from their files at
//! start-up. A rotated (or corrected) file therefore takes effect only in a new process. The
//! files are watched; when one changes, the service drains and stops as on SIGTERM, saying why,
//! and the orchestrator (Kubernetes, compose's restart policy) starts it again with the new files.

use std::path::PathBuf;
use std::time::Duration;

use crm_sync_runtime::settings::KafkaSettings;
use crm_sync_runtime::supervise::Supervisor;
use tokio_util::sync::CancellationToken;

/// Watches `kafka`'s credential files every `kafka.credential_check_ms` on `supervisor`.
pub fn watch(kafka: &KafkaSettings, supervisor: &mut Supervisor, shutdown: CancellationToken) {
    let kafka = kafka.clone();
    let every = Duration::from_millis(kafka.credential_check_ms);
    supervisor.spawn("kafka credential files", async move {
        stop_when_credentials_change(&kafka, every, shutdown).await
    });
}

/// The credential files `kafka` names (CA, client certificate and key, password files).
pub fn credential_files(kafka: &KafkaSettings) -> Vec<PathBuf> {
    [
        &kafka.ssl_ca_location,
        &kafka.ssl_certificate_location,
        &kafka.ssl_key_location,
        &kafka.ssl_key_password_file,
        &kafka.sasl_password_file,
        &kafka.oauth_client_secret_file,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect()
}

/// What a file holds now (None: it cannot be read, e.g. while a mount is being swapped).
fn contents(files: &[PathBuf]) -> Vec<Option<Vec<u8>>> {
    files.iter().map(|f| std::fs::read(f).ok()).collect()
}

/// Runs until `shutdown`; if one of `kafka`'s credential files changes first, cancels
/// `shutdown` (the service drains and exits) and then returns.
pub async fn stop_when_credentials_change(
    kafka: &KafkaSettings,
    every: Duration,
    shutdown: CancellationToken,
) {
    let files = credential_files(kafka);
    if files.is_empty() || every.is_zero() {
        shutdown.cancelled().await;
        return;
    }
    let read = files.clone();
    let Ok(mut known) = tokio::task::spawn_blocking(move || contents(&read)).await else {
        shutdown.cancelled().await;
        return;
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let read = files.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || contents(&read)).await else {
            continue;
        };
        let changed: Vec<String> = files
            .iter()
            .zip(known.iter().zip(&now))
            // A file that vanished for a moment is not a new credential; one that came back
            // (or appeared) with other contents is.
            .filter(|(_, (before, after))| after.is_some() && before != after)
            .map(|(file, _)| file.display().to_string())
            .collect();
        if !changed.is_empty() {
            tracing::warn!(
                files = changed.join(", "),
                "Kafka credential files changed: stopping so that the service restarts with them"
            );
            shutdown.cancel();
            return;
        }
        known = known
            .into_iter()
            .zip(now)
            .map(|(before, after)| after.or(before))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn settings_with_ca(ca: PathBuf) -> KafkaSettings {
        let defaults = crm_sync_runtime::ServiceDefaults {
            name: "t",
            http_port: 1,
            consumer_group: "g",
        };
        let mut kafka = crm_sync_runtime::Settings::load_from(defaults, None, Vec::new())
            .unwrap()
            .kafka;
        kafka.ssl_ca_location = Some(ca);
        kafka
    }

    #[tokio::test]
    async fn a_changed_ca_file_stops_the_service_and_an_unchanged_one_does_not() {
        let dir = std::env::temp_dir().join(format!("rotation-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "old").unwrap();
        let kafka = settings_with_ca(ca.clone());
        let shutdown = CancellationToken::new();
        let watcher = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                stop_when_credentials_change(&kafka, Duration::from_millis(20), shutdown).await
            }
        });
        // Rewritten with the same bytes: nothing to reload.
        std::fs::write(&ca, "old").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!shutdown.is_cancelled());
        std::fs::write(&ca, "new").unwrap();
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .unwrap()
            .unwrap();
        assert!(shutdown.is_cancelled());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
