//! The outbound policy at call time: a name resolving to a loopback address, a redirect and an
//! oversized answer each fail the lookup with a clear error, against a local HTTP server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use crm_sync_crm_directory::{Config, Credentials, Crm, DirectoryClient, Egress, LookupError};

async fn serve(router: Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    port
}

fn config(egress: Egress) -> Config {
    Config {
        timeout: Duration::from_millis(2000),
        attempts: 1,
        egress,
        ..Config::default()
    }
}

fn tests_egress() -> Egress {
    Egress {
        allow_insecure: true,
        extra_hosts: vec!["127.0.0.1".into()],
    }
}

fn hubspot(base_url: String, config: Config) -> DirectoryClient {
    DirectoryClient::new(
        Crm::HubSpot,
        Credentials {
            base_url: Some(base_url),
            access_token: Some("pat-na1-token".into()),
            oauth: None,
        },
        config,
    )
    .unwrap()
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_when_the_test_setting_is_off() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let port = serve(Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { StatusCode::OK }
    }))
    .await;
    // The operator allowed the name; what it resolves to is still checked.
    let client = hubspot(
        format!("https://localhost:{port}"),
        config(Egress {
            allow_insecure: false,
            extra_hosts: vec!["localhost".into()],
        }),
    );
    let error = client.lookup("101").await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("localhost is refused: address") && message.contains("loopback"),
        "{message}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached the server");

    // A loopback literal is refused before any request.
    let refused = DirectoryClient::new(
        Crm::HubSpot,
        Credentials {
            base_url: Some(format!("https://127.0.0.1:{port}")),
            access_token: Some("pat".into()),
            oauth: None,
        },
        config(Egress {
            allow_insecure: false,
            extra_hosts: vec!["127.0.0.1".into()],
        }),
    )
    .unwrap_err();
    assert!(
        matches!(&refused, LookupError::Misconfigured(m) if m.contains("loopback")),
        "{refused}"
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let followed = Arc::new(AtomicUsize::new(0));
    let counted = followed.clone();
    let router = Router::new()
        .route(
            "/crm/v3/owners/{id}",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/elsewhere")]) }),
        )
        .route(
            "/elsewhere",
            get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { axum::Json(serde_json::json!({"id": "101", "email": "x@example.com"})) }
            }),
        );
    let port = serve(router).await;
    let client = hubspot(format!("http://127.0.0.1:{port}"), config(tests_egress()));
    let error = client.lookup("101").await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("redirect (302 Found), which is not followed"),
        "{error}"
    );
    assert_eq!(followed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_oversized_answer_is_cut_with_a_clear_error() {
    // Sent in chunks without a length, so the cap applies while reading.
    let router = Router::new().route(
        "/crm/v3/owners/{id}",
        get(|| async {
            let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024]));
            axum::body::Body::from_stream(futures::stream::iter(chunks)).into_response()
        }),
    );
    let port = serve(router).await;
    let client = hubspot(
        format!("http://127.0.0.1:{port}"),
        Config {
            max_answer_bytes: 1024 * 1024,
            ..config(tests_egress())
        },
    );
    let error = client.lookup("101").await.unwrap_err();
    assert!(
        matches!(&error, LookupError::Unexpected(m) if m.contains("larger than 1048576 bytes")),
        "{error}"
    );
}
