//! The HTTP servers facing the internet: ops endpoints only on the ops port, and slow clients
//! (headers never finished, a body never sent or trickled in) cut off within the configured timeouts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::admin_support;

use std::time::{Duration, Instant};

use crm_sync_e2e::{Service, Tenant, TestEnv, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn ops_endpoints_are_served_only_on_the_ops_port() {
    let env = TestEnv::new("ops-port").await;
    let ingest = env.start_service("ingest", "ingest", &[]).await;
    let admin = env.start_service("admin-api", "admin-api", &[]).await;
    for service in [&ingest, &admin] {
        assert_ne!(service.port(), service.ops_port());
        for path in ["/metrics", "/readyz", "/healthz"] {
            let api = reqwest::get(service.url(path)).await.unwrap();
            assert_eq!(api.status(), 404, "{} {path} on the API port", service.name);
            let ops = reqwest::get(service.ops_url(path)).await.unwrap();
            assert_eq!(ops.status(), 200, "{} {path} on the ops port", service.name);
        }
        let metrics = reqwest::get(service.ops_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("crm_sync_http_requests_total"),
            "{metrics}"
        );
    }
}

/// Reads until the server closes the connection (or `limit` passes); what it answered, if
/// anything, and when it closed.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buffer),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Err(_) => panic!(
                "still connected after {limit:?}; answered so far: {}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

/// Sends half the headers, then nothing: the server must hang up after its header timeout.
async fn unfinished_headers_are_cut_off(service: &Service, port: u16) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Ty")
        .await
        .unwrap();
    let (_, after) = until_closed(&mut stream, Duration::from_secs(15)).await;
    assert!(
        after >= Duration::from_millis(900),
        "{} (port {port}): cut off after {after:?}, before the header timeout",
        service.name
    );
}

/// Sends whole headers announcing a body that never comes, to a route that reads it: the
/// server must answer 408 (or hang up) after its body timeout.
async fn unsent_bodies_are_cut_off(service: &Service, head: String) {
    let mut stream = TcpStream::connect(("127.0.0.1", service.port()))
        .await
        .unwrap();
    stream
        .write_all(format!("{head}Content-Length: 1000\r\n\r\n<a").as_bytes())
        .await
        .unwrap();
    let (answer, after) = until_closed(&mut stream, Duration::from_secs(15)).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{}: {answer}",
        service.name
    );
    assert!(
        after >= Duration::from_millis(900),
        "{}: {after:?}",
        service.name
    );
}

/// Sends a body one byte at a time, each within the body timeout, so that only the whole-request
/// timeout can end it: the server must answer 408 once that has passed, not keep reading.
async fn trickled_bodies_are_cut_off(service: &Service, head: String, request_timeout: Duration) {
    let stream = TcpStream::connect(("127.0.0.1", service.port()))
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(format!("{head}Content-Length: 1000\r\n\r\n<").as_bytes())
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..999 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if writer.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(15), reader.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Err(_) => panic!("{}: still reading a trickled body after 15 s", service.name),
        }
    }
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "{}: {answer}",
        service.name
    );
    assert!(
        started.elapsed() >= request_timeout.mul_f32(0.9),
        "{}: answered after {:?}, before the request timeout",
        service.name,
        started.elapsed()
    );
}

#[tokio::test]
async fn slow_clients_are_disconnected_within_the_configured_timeouts() {
    let env = TestEnv::new("slow-clients").await;
    let tenant = Tenant::create(&env.pool, "slow", true, true).await;
    let admin_token = admin_support::token(&env, tenant.company_id, "admin").await;
    let limits = [
        ("CRM_SYNC__HTTP__HEADER_READ_TIMEOUT_MS", "1000"),
        ("CRM_SYNC__HTTP__BODY_READ_TIMEOUT_MS", "1000"),
        ("CRM_SYNC__HTTP__REQUEST_TIMEOUT_MS", "3000"),
    ];
    let ingest = env.start_service("ingest", "ingest", &limits).await;
    let admin = env.start_service("admin-api", "admin-api", &limits).await;
    let provisioner = env
        .start_service("provisioner", "provisioner", &limits)
        .await;
    for service in [&ingest, &admin, &provisioner] {
        unfinished_headers_are_cut_off(service, service.port()).await;
        unfinished_headers_are_cut_off(service, service.ops_port()).await;
    }
    unsent_bodies_are_cut_off(
        &ingest,
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n",
            tenant.outbound_message_path()
        ),
    )
    .await;
    unsent_bodies_are_cut_off(
        &admin,
        format!(
            "POST /admin/v1/companies/{}/teams HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin_token}\r\nContent-Type: application/json\r\n",
            tenant.company_id
        ),
    )
    .await;
    trickled_bodies_are_cut_off(
        &ingest,
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n",
            tenant.outbound_message_path()
        ),
        Duration::from_secs(3),
    )
    .await;
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let env = TestEnv::new("max-conns").await;
    let ingest = env
        .start_service(
            "ingest",
            "ingest",
            &[
                ("CRM_SYNC__HTTP__MAX_CONNECTIONS", "2"),
                ("CRM_SYNC__HTTP__HEADER_READ_TIMEOUT_MS", "30000"),
            ],
        )
        .await;
    // Two idle connections take every slot of the webhook port.
    let _a = TcpStream::connect(("127.0.0.1", ingest.port()))
        .await
        .unwrap();
    let _b = TcpStream::connect(("127.0.0.1", ingest.port()))
        .await
        .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let url = ingest.url("/v1/integrations/x/events");
    assert!(
        client.post(&url).send().await.is_err(),
        "a third connection is not served while two are open"
    );
    drop((_a, _b));
    eventually("a connection slot to be free again", WAIT, || async {
        let r = client.post(&url).send().await.ok()?;
        (r.status() == 404).then_some(())
    })
    .await;
}
