//! The services under test, as replicas the suite kills, restarts and scales.

use std::time::Duration;

use crm_sync_e2e::{Service, TestEnv};
use rand::Rng;
use rand::rngs::StdRng;

/// The replicas of one service; killed ones are restarted as the same replica (record store,
/// transactional id) on the same port.
pub struct Fleet {
    binary: &'static str,
    /// Each replica's name and the service running it.
    pub replicas: Vec<(String, Service)>,
    started: usize,
}

impl Fleet {
    pub async fn start(env: &TestEnv, binary: &'static str) -> Fleet {
        let mut fleet = Fleet {
            binary,
            replicas: Vec::new(),
            started: 0,
        };
        fleet.add_new(env).await;
        fleet
    }

    async fn add_new(&mut self, env: &TestEnv) {
        let replica = format!("{}-r{}", self.binary, self.started + 1);
        self.add(env, replica, 0).await;
    }

    /// Starts `replica` on `port` (0: a port the system picks).
    async fn add(&mut self, env: &TestEnv, replica: String, port: u16) {
        self.started += 1;
        let label = format!("{}-{}", self.binary, self.started);
        let service = env
            .start_replica(self.binary, &label, &replica, port, &[])
            .await;
        self.replicas.push((replica, service));
    }

    pub async fn kill_one(&mut self, env: &TestEnv, rng: &mut StdRng) {
        let i = rng.random_range(0..self.replicas.len());
        let (replica, service) = self.replicas.remove(i);
        let port = service.port();
        service.kill().await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..2000))).await;
        self.add(env, replica, port).await;
    }

    pub async fn scale_to(&mut self, env: &TestEnv, n: usize) {
        while self.replicas.len() < n {
            self.add_new(env).await;
        }
        while self.replicas.len() > n {
            let (_, service) = self.replicas.pop().unwrap();
            let status = service.terminate().await;
            assert!(
                status.success(),
                "{} exited with {status} on SIGTERM",
                self.binary
            );
        }
    }

    /// Replicas that died without being killed by the suite.
    fn unexpected_exits(&mut self) -> Vec<String> {
        self.replicas
            .iter_mut()
            .filter_map(|(_, s)| s.exited().map(|status| format!("{} ({status})", s.name)))
            .collect()
    }
}

/// The pipeline's three consumer services.
pub struct Fleets {
    pub ingest: Fleet,
    pub evaluators: Fleet,
    pub provisioners: Fleet,
}

impl Fleets {
    pub async fn start(env: &TestEnv) -> Fleets {
        Fleets {
            ingest: Fleet::start(env, "ingest").await,
            evaluators: Fleet::start(env, "workflow-evaluator").await,
            provisioners: Fleet::start(env, "provisioner").await,
        }
    }

    /// The ledger's line on replicas that died on their own.
    pub fn exits_check(&mut self) -> (String, bool) {
        let mut exits = Vec::new();
        for fleet in [
            &mut self.ingest,
            &mut self.evaluators,
            &mut self.provisioners,
        ] {
            exits.extend(fleet.unexpected_exits());
        }
        let listed = if exits.is_empty() {
            "none".to_owned()
        } else {
            exits.join(", ")
        };
        (
            format!("unexpected service exits: {listed}"),
            exits.is_empty(),
        )
    }

    pub async fn kill_all(self) {
        for fleet in [self.ingest, self.evaluators, self.provisioners] {
            for (_, service) in fleet.replicas {
                service.kill().await;
            }
        }
    }
}
