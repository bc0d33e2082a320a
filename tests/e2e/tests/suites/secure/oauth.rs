//! Kafka over SASL_SSL with OAUTHBEARER: the services get their tokens from an identity provider
//! with OIDC client credentials, and the broker accepts only JWTs signed with the provider's key
//! (the JWKS `stack.sh` wrote). The provider is played by this test: a token endpoint that checks
//! the client's credentials and signs short-lived RS256 tokens.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use super::*;

/// How long each token lives: short, so the services refresh tokens during the test.
const TOKEN_SECONDS: u64 = 60;

struct Provider {
    key: RsaKeyPair,
    key_id: String,
    issuer: String,
    audience: String,
    client_id: String,
    /// The secret the provider accepts; an administrator may change it while the test runs.
    accepted_secret: Mutex<String>,
    /// Every token request: whether the client's credentials were accepted.
    requests: Mutex<Vec<bool>>,
}

/// The identity provider's token endpoint on loopback.
struct IdentityProvider {
    url: String,
    state: Arc<Provider>,
}

impl IdentityProvider {
    async fn start(secure: &Secure, client_id: &str, secret: &str) -> IdentityProvider {
        Self::signing_with(secure, "CRM_SYNC_TEST_OIDC_KEY", client_id, secret).await
    }

    /// A provider signing with the key `secure.env` names under `key`.
    async fn signing_with(
        secure: &Secure,
        key: &str,
        client_id: &str,
        secret: &str,
    ) -> IdentityProvider {
        let der = PrivateKeyDer::from_pem_file(secure.get(key)).unwrap();
        let state = Arc::new(Provider {
            key: RsaKeyPair::from_pkcs8(der.secret_der()).unwrap(),
            key_id: secure.get("CRM_SYNC_TEST_OIDC_KEY_ID").into(),
            issuer: secure.get("CRM_SYNC_TEST_OIDC_ISSUER").into(),
            audience: secure.get("CRM_SYNC_TEST_OIDC_AUDIENCE").into(),
            client_id: client_id.into(),
            accepted_secret: Mutex::new(secret.into()),
            requests: Mutex::default(),
        });
        let app = axum::Router::new()
            .route("/oauth2/token", post(issue_token))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://127.0.0.1:{}/oauth2/token",
            listener.local_addr().unwrap().port()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        IdentityProvider { url, state }
    }

    fn requests(&self) -> (usize, usize) {
        let requests = self.state.requests.lock().unwrap();
        let granted = requests.iter().filter(|ok| **ok).count();
        (granted, requests.len() - granted)
    }

    fn accept_secret(&self, secret: &str) {
        *self.state.accepted_secret.lock().unwrap() = secret.into();
    }
}

/// The client-credentials grant: HTTP Basic with the client's id and secret, as librdkafka sends.
async fn issue_token(
    State(provider): State<Arc<Provider>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<serde_json::Value>) {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok());
    let expected = format!(
        "{}:{}",
        provider.client_id,
        provider.accepted_secret.lock().unwrap()
    );
    let granted = body.contains("grant_type=client_credentials")
        && presented.as_deref() == Some(expected.as_str());
    provider.requests.lock().unwrap().push(granted);
    if !granted {
        let error = serde_json::json!({"error": "invalid_client"});
        return (StatusCode::UNAUTHORIZED, Json(error));
    }
    let token = serde_json::json!({
        "access_token": provider.sign(),
        "token_type": "Bearer",
        "expires_in": TOKEN_SECONDS,
    });
    (StatusCode::OK, Json(token))
}

impl Provider {
    fn sign(&self) -> String {
        let now = chrono::Utc::now().timestamp();
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.key_id});
        let claims = serde_json::json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": self.client_id,
            "iat": now,
            "exp": now + TOKEN_SECONDS as i64,
            "scope": "kafka",
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

fn oauth_env(
    secure: &Secure,
    provider: &IdentityProvider,
    secret_file: &str,
) -> Vec<(String, String)> {
    vec![
        (
            "CRM_SYNC__KAFKA__BROKERS".into(),
            secure.get("CRM_SYNC_TEST_OAUTH_BROKERS").into(),
        ),
        (
            "CRM_SYNC__KAFKA__SECURITY_PROTOCOL".into(),
            "SASL_SSL".into(),
        ),
        (
            "CRM_SYNC__KAFKA__SASL_MECHANISM".into(),
            "OAUTHBEARER".into(),
        ),
        (
            "CRM_SYNC__KAFKA__OAUTH_TOKEN_ENDPOINT_URL".into(),
            provider.url.clone(),
        ),
        (
            "CRM_SYNC__KAFKA__OAUTH_CLIENT_ID".into(),
            provider.state.client_id.clone(),
        ),
        (
            "CRM_SYNC__KAFKA__OAUTH_CLIENT_SECRET_FILE".into(),
            secret_file.into(),
        ),
        ("CRM_SYNC__KAFKA__OAUTH_SCOPE".into(), "kafka".into()),
        (
            "CRM_SYNC__KAFKA__SSL_CA_LOCATION".into(),
            secure.get("CRM_SYNC_TEST_CA").into(),
        ),
    ]
}

fn write_secret(env: &TestEnv) -> (String, String) {
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let file = env.log_dir.join("oauth-client-secret");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    (secret, file.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_pipeline_runs_over_sasl_ssl_oauthbearer_with_tokens_from_an_identity_provider() {
    let secure = Secure::load();
    let env = TestEnv::new("secure-oauth").await;
    let (secret, secret_file) = write_secret(&env);
    let provider = IdentityProvider::start(&secure, &format!("crm-sync-{}", env.id), &secret).await;
    let mut extra = oauth_env(&secure, &provider, &secret_file);
    extra.extend(secure.database_env(&env));
    let services = run_pipeline(&env, &extra).await;

    // Every service authenticated with its own token; none was refused.
    let (granted, refused) = provider.requests();
    assert!(granted >= services.len(), "{granted} tokens for 3 services");
    assert_eq!(refused, 0);
    for service in services {
        let log = std::fs::read_to_string(&service.log_file).unwrap();
        assert!(
            !log.contains(&secret),
            "{} logged the client secret",
            service.name
        );
    }
}

#[tokio::test]
async fn a_refused_client_secret_makes_readyz_say_so_and_recovers_when_the_provider_accepts_it() {
    let secure = Secure::load();
    let env = TestEnv::new("secure-oauth-refused").await;
    let (secret, secret_file) = write_secret(&env);
    // The provider knows the client by another secret until its administrator fixes that.
    let provider =
        IdentityProvider::start(&secure, &format!("crm-sync-{}", env.id), "not-yet").await;
    let mut extra = oauth_env(&secure, &provider, &secret_file);
    extra.extend(secure.database_env(&env));
    let provisioner = env.spawn_service("provisioner", "provisioner", &borrowed(&extra));

    let body = eventually("readyz to name the failure", WAIT, || async {
        let (status, body) = readyz(&provisioner).await;
        (status == 503 && body.contains("kafka: OAUTHBEARER")).then_some(body)
    })
    .await;
    assert!(body.contains("token"), "{body}");
    assert!(!body.contains(&secret), "{body}");
    assert!(provider.requests().1 >= 1, "the provider was never asked");

    provider.accept_secret(&secret);
    eventually("readyz to recover", WAIT, || async {
        (readyz(&provisioner).await.0 == 200).then_some(())
    })
    .await;
    let log = std::fs::read_to_string(&provisioner.log_file).unwrap();
    assert!(!log.contains(&secret), "the client secret was logged");
}

#[tokio::test]
async fn a_token_signed_by_a_key_the_broker_does_not_trust_is_refused_and_readyz_says_so() {
    let secure = Secure::load();
    let env = TestEnv::new("secure-oauth-forged").await;
    let (secret, secret_file) = write_secret(&env);
    // Any RSA key but the provider's: the broker checks signatures against the provider's JWKS.
    let provider = IdentityProvider::signing_with(
        &secure,
        "CRM_SYNC_TEST_CLIENT_KEY",
        &format!("crm-sync-{}", env.id),
        &secret,
    )
    .await;
    let mut extra = oauth_env(&secure, &provider, &secret_file);
    extra.extend(secure.database_env(&env));
    let provisioner = env.spawn_service("provisioner", "provisioner", &borrowed(&extra));

    eventually("readyz to name the refusal", WAIT, || async {
        let (status, body) = readyz(&provisioner).await;
        (status == 503 && body.contains("kafka: SASL authentication failed")).then_some(())
    })
    .await;
    assert!(provider.requests().0 >= 1, "no token was issued");
}
