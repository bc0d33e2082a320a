//! The OAuth 2.0 token endpoint of the fake CRMs: the refresh-token grant with rotation.

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::json;

use super::{Request, Shared, json as reply};

/// Where the fakes answer token requests (Salesforce's path, and the one Pipedrive and HubSpot
/// use on their own hosts).
pub const TOKEN_PATHS: [&str; 2] = ["/services/oauth2/token", "/oauth/token"];

/// The refresh token the endpoint accepts, and how many it issued.
#[derive(Debug, Clone)]
pub struct Refresh {
    pub current: String,
    pub issued: u32,
}

pub fn token(shared: &Shared, request: &Request) -> Response {
    let body = String::from_utf8_lossy(&request.body);
    let form: HashMap<String, String> = format!("/?{body}")
        .parse::<Uri>()
        .ok()
        .and_then(|uri| Query::try_from_uri(&uri).ok())
        .map(|q| q.0)
        .unwrap_or_default();
    let mut refresh = shared.refresh.lock().unwrap();
    let Some(rotation) = refresh.as_mut() else {
        return invalid_grant("no OAuth client is registered");
    };
    if form.get("grant_type").map(String::as_str) != Some("refresh_token")
        || form.get("refresh_token") != Some(&rotation.current)
    {
        return invalid_grant("expired access/refresh token");
    }
    rotation.issued += 1;
    rotation.current = format!("rt-{}", rotation.issued);
    let access = format!("access-{}", rotation.issued);
    *shared.token.lock().unwrap() = access.clone();
    reply(
        StatusCode::OK,
        json!({
            "access_token": access,
            "refresh_token": rotation.current,
            "token_type": "Bearer",
            "expires_in": 3600,
            "instance_url": request.base,
        }),
    )
}

fn invalid_grant(description: &str) -> Response {
    reply(
        StatusCode::BAD_REQUEST,
        json!({"error": "invalid_grant", "error_description": description}),
    )
}
