//! Traces exported over HTTPS to a hosted-style collector: TLS checked against a private CA
//! (`SSL_CERT_FILE`), the collector's API key sent as a header read from a file, and never logged.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::*;

/// One export request: the API key header it carried and the services whose spans it held.
#[derive(Debug, Clone)]
struct Export {
    api_key: Option<String>,
    services: Vec<String>,
}

/// An OTLP/HTTP traces endpoint served over TLS with the local stack's server certificate.
struct HttpsCollector {
    endpoint: String,
    exports: Arc<Mutex<Vec<Export>>>,
}

impl HttpsCollector {
    async fn start(certificate: &Path, key: &Path) -> HttpsCollector {
        let chain = CertificateDer::pem_file_iter(certificate)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!(
            "https://localhost:{}/v1/traces",
            listener.local_addr().unwrap().port()
        );
        let exports = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(exports.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    // A client that does not trust the certificate hangs up here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                        .await;
                });
            }
        });
        HttpsCollector { endpoint, exports }
    }

    fn exports(&self) -> Vec<Export> {
        self.exports.lock().unwrap().clone()
    }
}

async fn receive(
    State(exports): State<Arc<Mutex<Vec<Export>>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    let services = request
        .resource_spans
        .iter()
        .filter_map(|r| r.resource.as_ref())
        .flat_map(|r| &r.attributes)
        .filter(|a| a.key == "service.name")
        .filter_map(|a| match a.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(name)) => Some(name.clone()),
            _ => None,
        })
        .collect();
    let api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    exports.lock().unwrap().push(Export { api_key, services });
    Vec::new()
}

#[tokio::test]
async fn traces_are_exported_over_https_with_the_collectors_api_key_from_a_file() {
    let secure = Secure::load();
    let tls = Path::new(secure.get("CRM_SYNC_TEST_CA")).parent().unwrap();
    let collector = HttpsCollector::start(&tls.join("server.pem"), &tls.join("server.key")).await;
    let env = TestEnv::new("otlp-https").await;
    let tenant = Tenant::create(&env.pool, "otlp", true, true).await;
    let api_key = format!("key-{}", uuid::Uuid::new_v4().simple());
    let headers_file = std::env::temp_dir().join(format!("otlp-headers-{}", env.topics.events));
    std::fs::write(&headers_file, format!("x-api-key={api_key}\n")).unwrap();
    let ingest = env
        .start_service(
            "ingest",
            "ingest",
            &[
                (
                    "CRM_SYNC__TELEMETRY__OTLP_ENDPOINT",
                    collector.endpoint.as_str(),
                ),
                (
                    "CRM_SYNC__TELEMETRY__OTLP_HEADERS_FILE",
                    headers_file.to_str().unwrap(),
                ),
                // The collector's certificate is signed by the local stack's private CA.
                ("SSL_CERT_FILE", secure.get("CRM_SYNC_TEST_CA")),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
                ("CRM_SYNC__TELEMETRY__LOG_LEVEL", "debug"),
            ],
        )
        .await;
    let xml = outbound_message(
        &tenant.organization_id,
        &[won_opportunity(
            "04l0000000OTLPS1AA",
            "0060000000OTLPS1AA",
            "0050000000OTLPS1",
            "10.00",
        )],
    );
    post_outbound_message(&ingest, &tenant, xml).await;
    let exports = eventually("ingest's spans at the HTTPS collector", WAIT, || async {
        let exports = collector.exports();
        exports
            .iter()
            .any(|e| e.services.iter().any(|s| s == "ingest"))
            .then_some(exports)
    })
    .await;
    assert!(
        exports
            .iter()
            .all(|e| e.api_key.as_deref() == Some(api_key.as_str())),
        "every export carries the API key: {exports:?}"
    );
    let log = std::fs::read_to_string(&ingest.log_file).unwrap();
    assert!(
        !log.contains(&api_key),
        "ingest logged the collector's API key"
    );
    let _ = std::fs::remove_file(headers_file);
}
