//! Request extractors whose refusals follow the API's error shape: JSON bodies and query strings
//! are parsed strictly (unknown fields refused) and a bad value is a 422 naming its field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("application/json") || v.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if crm_sync_runtime::server::is_body_timeout(&e) {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the body stopped arriving before it was complete",
                )
            } else {
                ApiError::new(e.status(), "unreadable_body", e.body_text())
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = path_of(e.path());
        json_error(&path, e.into_inner())
    })?;
    de.end().map_err(|e| json_error("", e))?;
    Ok(value)
}

fn json_error(path: &str, error: serde_json::Error) -> ApiError {
    let message = error.to_string();
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(m, _)| m)
        .to_owned();
    match error.classify() {
        serde_json::error::Category::Data => ApiError::invalid(field_of(path, &message), message),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {message}"),
        ),
    }
}

/// A query string, parsed strictly: unknown parameters are refused like unknown JSON fields.
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(QueryParams)
            .map_err(|e| {
                let path = path_of(e.path());
                let message = e.into_inner().to_string();
                ApiError::invalid(field_of(&path, &message), message)
            })
    }
}

/// Path parameters; an id that does not parse is a 404 like an id that does not exist.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(|_| ApiError::not_found("resource"))
    }
}

fn path_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Serde names a missing or unknown field only in its message: point at that field, not at the
/// object containing it.
fn field_of(path: &str, message: &str) -> String {
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match (path.is_empty(), named) {
        // serde_path_to_error already ends the path with an unknown field's name.
        (false, Some(name)) if path == name || path.ends_with(&format!("/{name}")) => {
            path.to_owned()
        }
        (true, Some(name)) => name.to_owned(),
        (false, Some(name)) => format!("{path}/{name}"),
        (_, None) => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        items: Vec<Inner>,
    }

    fn field(body: &str) -> (u16, Option<String>) {
        let e = parse_json::<Outer>(body.as_bytes()).unwrap_err();
        (e.status.as_u16(), e.field)
    }

    #[test]
    fn errors_point_at_the_field() {
        assert_eq!(field(r#"{"items": []}"#), (422, Some("name".into())));
        assert_eq!(
            field(r#"{"name": "a", "items": [], "extra": 1}"#),
            (422, Some("extra".into()))
        );
        assert_eq!(
            field(r#"{"name": "a", "items": [{"n": 1}, {"n": "x"}]}"#),
            (422, Some("items/1/n".into()))
        );
        assert_eq!(
            field(r#"{"name": "a", "items": [{"m": 1}]}"#),
            (422, Some("items/0/m".into()))
        );
        assert_eq!(field(r#"{"name": "a", "#), (400, None));
        assert_eq!(field(r#"{"name": "a", "items": []} x"#), (400, None));
    }
}
