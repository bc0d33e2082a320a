//! The fixture the suites start from: [`spawn_app`] starts the services a test needs against its
//! [`TestEnv`] and hands back an [`App`] with request helpers for ingest and admin-api; every
//! HTTP answer the suites check is an [`Answer`].

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::{Service, TestEnv, eventually, metric};

/// Environment variables on top of the kit's own, as `(name, value)`.
pub type Vars<'a> = &'a [(&'a str, &'a str)];

/// What [`spawn_app`] starts: ingest, the evaluator and `provisioners` provisioners always,
/// admin-api when `admin_api_env` is set; each with its variables on top of the kit's.
#[derive(Clone, Copy)]
pub struct AppOptions<'a> {
    pub ingest_env: Vars<'a>,
    pub evaluator_env: Vars<'a>,
    pub provisioner_env: Vars<'a>,
    pub provisioners: usize,
    pub admin_api_env: Option<Vars<'a>>,
    /// Wait until the evaluator and every provisioner own partitions: a test of what they do
    /// with traffic (e.g. two provisioners racing) must not start before they consume.
    pub wait_for_partitions: bool,
}

impl Default for AppOptions<'_> {
    fn default() -> Self {
        AppOptions {
            ingest_env: &[],
            evaluator_env: &[],
            provisioner_env: &[],
            provisioners: 1,
            admin_api_env: None,
            wait_for_partitions: false,
        }
    }
}

/// The services of one test, killed when dropped, and the test's database and topics.
pub struct App<'e> {
    pub env: &'e TestEnv,
    pub ingest: Service,
    pub evaluator: Service,
    /// The first provisioner; [`App::more_provisioners`] holds the others.
    pub provisioner: Service,
    pub more_provisioners: Vec<Service>,
    pub admin_api: Option<Service>,
}

const START_WAIT: Duration = Duration::from_secs(60);

/// Starts the services `options` names on `env`'s database and topics, each ready.
pub async fn spawn_app<'e>(env: &'e TestEnv, options: AppOptions<'_>) -> App<'e> {
    let ingest = env
        .start_service("ingest", "ingest", options.ingest_env)
        .await;
    let evaluator = env
        .start_service(
            "workflow-evaluator",
            "workflow-evaluator",
            options.evaluator_env,
        )
        .await;
    let provisioner = env
        .start_service("provisioner", "provisioner", options.provisioner_env)
        .await;
    let mut more_provisioners = Vec::new();
    for i in 1..options.provisioners {
        let label = format!("provisioner-{}", i + 1);
        more_provisioners.push(
            env.start_service("provisioner", &label, options.provisioner_env)
                .await,
        );
    }
    let admin_api = match options.admin_api_env {
        Some(vars) => Some(env.start_service("admin-api", "admin-api", vars).await),
        None => None,
    };
    let app = App {
        env,
        ingest,
        evaluator,
        provisioner,
        more_provisioners,
        admin_api,
    };
    if options.wait_for_partitions {
        for consumer in app.provisioners().chain([&app.evaluator]) {
            owns_partitions(consumer).await;
        }
    }
    app
}

/// Waits until a consumer service owns partitions of its topic.
pub async fn owns_partitions(consumer: &Service) {
    eventually("consumer owns partitions", START_WAIT, || async {
        (metric(consumer, "crm_sync_consumer_assigned_partitions", &[]).await > 0.0).then_some(())
    })
    .await;
}

impl App<'_> {
    /// Every provisioner replica.
    pub fn provisioners(&self) -> impl Iterator<Item = &Service> {
        std::iter::once(&self.provisioner).chain(&self.more_provisioners)
    }

    /// POSTs `body` to ingest's `path` with `headers`.
    pub async fn post_ingest(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<String>,
    ) -> Answer {
        post(&self.ingest.url(path), headers, body).await
    }

    /// A client of admin-api with a bearer token (None: anonymous).
    pub fn admin(&self, token: Option<&str>) -> AdminClient {
        let api = self
            .admin_api
            .as_ref()
            .expect("spawn_app was asked for admin-api (AppOptions::admin_api_env)");
        AdminClient::new(api, token)
    }
}

/// An HTTP answer, with what the suites check of it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Answer {
    pub async fn from_response(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        Answer {
            status,
            headers,
            body: response.text().await.unwrap(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The JSON body: Null when there is none, the text as a JSON string when it is not JSON.
    pub fn json(&self) -> Value {
        if self.body.is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&self.body).unwrap_or_else(|_| Value::String(self.body.clone()))
    }

    /// Asserts the status, showing the body when it differs; returns the JSON body.
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected answer: {}", self.body);
        self.json()
    }

    /// Asserts a 422 pointing at `field`.
    pub fn invalid(self, field: &str) -> Value {
        let body = self.expect(422);
        assert_eq!(body["error"], "validation_failed", "{body}");
        assert_eq!(body["field"], field, "{body}");
        body
    }

    /// The error code, after checking the error body's shape: a message, and the request id
    /// the `x-request-id` header also carries.
    pub fn error(&self) -> String {
        let body = self.json();
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error bodies say what is wrong: {}",
            self.body
        );
        let id = body["request_id"].as_str().unwrap_or_default();
        assert!(
            !id.is_empty(),
            "error bodies carry the request id: {}",
            self.body
        );
        assert_eq!(self.header("x-request-id"), Some(id));
        body["error"].as_str().unwrap_or_default().to_owned()
    }

    /// The error code of a JSON error answer, checking its content type and message on the way.
    pub fn error_code(&self) -> String {
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "error answers are JSON, got {content_type:?}: {}",
            self.body
        );
        let json: Value = serde_json::from_str(&self.body).unwrap();
        let message = json["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "error body has a message: {}",
            self.body
        );
        json["error"].as_str().unwrap().to_owned()
    }

    pub fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// POSTs `body` to `url` with `headers`.
pub async fn post(url: &str, headers: &[(&str, &str)], body: impl Into<String>) -> Answer {
    let mut request = reqwest::Client::new().post(url).body(body.into());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Answer::from_response(request.send().await.unwrap()).await
}

/// A small JSON client of admin-api.
pub struct AdminClient {
    pub base: String,
    pub token: Option<String>,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(api: &Service, token: Option<&str>) -> AdminClient {
        AdminClient {
            base: api.url(""),
            token: token.map(str::to_owned),
            http: reqwest::Client::new(),
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Answer::from_response(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call("POST", path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Answer {
        self.call("PATCH", path, Some(body)).await
    }

    pub async fn put(&self, path: &str) -> Answer {
        self.call("PUT", path, None).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.call("DELETE", path, None).await
    }

    /// Every item of a paginated list, following `next_cursor` with pages of `limit`.
    pub async fn all(&self, path: &str, limit: u32) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        let sep = if path.contains('?') { '&' } else { '?' };
        loop {
            let mut url = format!("{path}{sep}limit={limit}");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page = self.get(&url).await.expect(200);
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return items,
            }
            assert!(items.len() < 10_000, "pagination does not end");
        }
    }
}
