//! The services as real processes: started from the target directory, found at the ports they
//! bound, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::binary_path;

/// The services whose `/healthz`, `/readyz` and `/metrics` are not on their API port.
pub const SEPARATE_OPS_PORT: [&str; 2] = ["ingest", "admin-api"];

/// A running service process, killed when dropped.
pub struct Service {
    pub name: String,
    pub log_file: PathBuf,
    /// The ports it bound, once its log has named them.
    ports: OnceLock<Ports>,
    child: Child,
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    api: u16,
    ops: u16,
}

impl Service {
    pub async fn start(
        binary: &str,
        label: &str,
        env: &[(String, String)],
        log_dir: &Path,
    ) -> Service {
        let mut service = Service::spawn(binary, label, env, log_dir);
        service.wait_ready(Duration::from_secs(60)).await;
        service
    }

    pub fn spawn(binary: &str, label: &str, env: &[(String, String)], log_dir: &Path) -> Service {
        let path = binary_path(binary);
        let log_file = log_dir.join(format!("{label}.log"));
        let log = std::fs::File::create(&log_file).unwrap();
        let mut command = Command::new(&path);
        command
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("CRM_SYNC_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "starting {} (run `cargo build --workspace --bins` first): {e}",
                path.display()
            )
        });
        Service {
            name: label.to_owned(),
            log_file,
            ports: OnceLock::new(),
            child,
        }
    }

    /// The API port (the consumers' only port). 0 until the service has bound it: a URL with
    /// port 0 refuses connections, as a service not yet listening does.
    pub fn port(&self) -> u16 {
        self.ports().map_or(0, |p| p.api)
    }

    /// Where its `/healthz`, `/readyz` and `/metrics` are ([`Service::port`] for the consumers).
    pub fn ops_port(&self) -> u16 {
        self.ports().map_or(0, |p| p.ops)
    }

    /// The bound ports, once the service's log names them (read until then, kept after).
    fn ports(&self) -> Option<Ports> {
        if let Some(ports) = self.ports.get() {
            return Some(*ports);
        }
        let text = std::fs::read_to_string(&self.log_file).ok()?;
        let ports = ports_in_log(&text)?;
        Some(*self.ports.get_or_init(|| ports))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port())
    }

    /// A URL of the ops endpoints (`/healthz`, `/readyz`, `/metrics`).
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ops_port())
    }

    async fn wait_ready(&mut self, timeout: Duration) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited during start-up ({status}); log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if self.ports().is_some()
                && let Ok(r) = client.get(self.ops_url("/readyz")).send().await
                && r.status().is_success()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} not ready within {timeout:?}; log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// How many lines of the service's log so far contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        let text = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        text.lines().filter(|line| line.contains(needle)).count()
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("service did not exit within 30 s of SIGTERM")
            .unwrap()
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The ports a service's JSON log names as bound: `started` with `addr` (the consumers), or
/// `… listening` with `address` and `ops_port` (ingest, admin-api).
fn ports_in_log(text: &str) -> Option<Ports> {
    text.lines().find_map(|line| {
        let entry: serde_json::Value = serde_json::from_str(line).ok()?;
        let port_of = |field: &str| {
            let address: std::net::SocketAddr = entry[field].as_str()?.parse().ok()?;
            Some(address.port())
        };
        let message = entry["message"].as_str()?;
        let ports = if message == "started" {
            let api = port_of("addr")?;
            Ports { api, ops: api }
        } else if message.ends_with(" listening") {
            let ops = u16::try_from(entry["ops_port"].as_u64()?).ok()?;
            Ports {
                api: port_of("address")?,
                ops,
            }
        } else {
            return None;
        };
        // Port 0 is what was asked for, not what was bound: not an address to use.
        (ports.api != 0 && ports.ops != 0).then_some(ports)
    })
}

#[cfg(test)]
mod tests {
    use super::ports_in_log;

    #[test]
    fn the_bound_ports_come_from_the_start_up_line() {
        let consumer = r#"{"level":"INFO","message":"connecting"}
{"level":"INFO","message":"started","service":"provisioner","addr":"127.0.0.1:46613"}"#;
        let ports = ports_in_log(consumer).unwrap();
        assert_eq!((ports.api, ports.ops), (46613, 46613));

        let ingest = r#"{"level":"INFO","message":"ingest listening","address":"127.0.0.1:39997","ops_port":38483}"#;
        let ports = ports_in_log(ingest).unwrap();
        assert_eq!((ports.api, ports.ops), (39997, 38483));

        // A service that logs the configured port 0 has not said where it listens.
        let configured =
            r#"{"level":"INFO","message":"ingest listening","address":"127.0.0.1:0","ops_port":0}"#;
        assert!(ports_in_log(configured).is_none());
        assert!(ports_in_log("").is_none());
    }
}
