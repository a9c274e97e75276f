//! The browser page: one HTML file, a script and a style sheet compiled into
//! the binary (no build step), served with a strict Content-Security-Policy.

use crate::error::ApiError;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/app.css");
const LINK: &str = include_str!("../assets/link.html");
const LINK_SCRIPT: &str = include_str!("../assets/link.js");

/// Only this origin's script and style; previews load from the API; no
/// framing by other sites.
const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; media-src 'self'; frame-src 'self'; \
                   object-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'";

fn asset(body: &'static str, ctype: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /`: the page.
pub async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// `GET /app.js`.
pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /app.css`.
pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

/// `GET /signup/verify` and `GET /reset`: the pages links in mail open.
pub async fn link() -> Response {
    asset(LINK, "text/html; charset=utf-8")
}

/// `GET /link.js`.
pub async fn link_script() -> Response {
    asset(LINK_SCRIPT, "text/javascript; charset=utf-8")
}

/// Anything else.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such page or API endpoint".into())
}
