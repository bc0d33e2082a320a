//! The integration management page: plain HTML, CSS and JavaScript compiled into the binary and
//! served from `/admin/`, with a strict Content-Security-Policy (same-origin only: no CDN, no
//! inline script), so the page works wherever admin-api runs.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const BACKFILLS_JS: &str = include_str!("../assets/backfills.js");
const DRYRUN_JS: &str = include_str!("../assets/dryrun.js");
const CREDENTIALS_JS: &str = include_str!("../assets/credentials.js");
const AUDIT_JS: &str = include_str!("../assets/audit.js");
const COMPANY_JS: &str = include_str!("../assets/company.js");
const HEALTH_JS: &str = include_str!("../assets/health.js");
const PEOPLE_JS: &str = include_str!("../assets/people.js");
const INTEGRATION_DELETE_JS: &str = include_str!("../assets/integration_delete.js");
const TRAIL_JS: &str = include_str!("../assets/trail.js");
const APP_CSS: &str = include_str!("../assets/app.css");

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/admin/") }))
        .route("/admin", get(|| async { Redirect::to("/admin/") }))
        .route(
            "/admin/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/admin/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/admin/assets/backfills.js",
            get(|| async { asset("text/javascript; charset=utf-8", BACKFILLS_JS) }),
        )
        .route(
            "/admin/assets/dryrun.js",
            get(|| async { asset("text/javascript; charset=utf-8", DRYRUN_JS) }),
        )
        .route(
            "/admin/assets/audit.js",
            get(|| async { asset("text/javascript; charset=utf-8", AUDIT_JS) }),
        )
        .route(
            "/admin/assets/credentials.js",
            get(|| async { asset("text/javascript; charset=utf-8", CREDENTIALS_JS) }),
        )
        .route(
            "/admin/assets/company.js",
            get(|| async { asset("text/javascript; charset=utf-8", COMPANY_JS) }),
        )
        .route(
            "/admin/assets/health.js",
            get(|| async { asset("text/javascript; charset=utf-8", HEALTH_JS) }),
        )
        .route(
            "/admin/assets/people.js",
            get(|| async { asset("text/javascript; charset=utf-8", PEOPLE_JS) }),
        )
        .route(
            "/admin/assets/integration_delete.js",
            get(|| async { asset("text/javascript; charset=utf-8", INTEGRATION_DELETE_JS) }),
        )
        .route(
            "/admin/assets/trail.js",
            get(|| async { asset("text/javascript; charset=utf-8", TRAIL_JS) }),
        )
        .route(
            "/admin/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}
