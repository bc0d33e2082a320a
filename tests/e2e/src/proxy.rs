//! A TCP proxy a test puts between a service and a server (PostgreSQL) to take the server
//! "away" and bring it back without restarting it: other tests share the server. While away,
//! open connections are closed and new ones wait (as connections to a restarting server do)
//! until the server is back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

pub struct TcpProxy {
    pub port: u16,
    shared: Arc<Shared>,
    accept: AbortHandle,
}

struct Shared {
    away: watch::Sender<bool>,
    /// New connections are closed at once instead of waiting.
    refusing: AtomicBool,
    connections: Mutex<Vec<AbortHandle>>,
}

impl TcpProxy {
    /// Forwards a free local port to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            away: watch::Sender::new(false),
            refusing: AtomicBool::new(false),
            connections: Mutex::default(),
        });
        let upstream = upstream.to_owned();
        let accept = {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        continue;
                    };
                    if shared.refusing.load(Ordering::SeqCst) {
                        continue;
                    }
                    let upstream = upstream.clone();
                    let mut away = shared.away.subscribe();
                    let task = tokio::spawn(async move {
                        // A connection made while the server is away waits for it.
                        if away.wait_for(|away| !away).await.is_err() {
                            return;
                        }
                        if let Ok(mut server) = TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    let mut connections = shared.connections.lock().unwrap();
                    connections.retain(|c| !c.is_finished());
                    connections.push(task.abort_handle());
                }
            })
            .abort_handle()
        };
        TcpProxy {
            port,
            shared,
            accept,
        }
    }

    /// The server goes away: every open connection is closed; new ones wait until [`restore`].
    ///
    /// [`restore`]: TcpProxy::restore
    pub fn cut(&self) {
        self.shared.away.send_replace(true);
        for connection in self.shared.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// The server is down, as a stopped one: every open connection is closed, and new ones are
    /// closed at once, until [`restore`].
    ///
    /// [`restore`]: TcpProxy::restore
    pub fn refuse(&self) {
        self.shared.refusing.store(true, Ordering::SeqCst);
        self.cut();
    }

    /// The server is back.
    pub fn restore(&self) {
        self.shared.refusing.store(false, Ordering::SeqCst);
        self.shared.away.send_replace(false);
    }

    /// A proxy in front of the PostgreSQL that `url` (`postgres://user:pass@host:port/db`)
    /// names; [`postgres_url`](TcpProxy::postgres_url) gives the URL through it.
    pub async fn for_postgres(url: &str) -> TcpProxy {
        let after_at = url.split_once('@').unwrap().1;
        TcpProxy::start(after_at.split_once('/').unwrap().0).await
    }

    /// `url` (a `postgres://user:pass@host:port/db` URL) pointed at this proxy instead.
    pub fn postgres_url(&self, url: &str) -> String {
        let (head, rest) = url.split_once('@').unwrap();
        let (_, path) = rest.split_once('/').unwrap();
        format!("{head}@127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
