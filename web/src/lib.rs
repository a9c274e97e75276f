//! The Nimbus web gateway: serves the store's files to browsers and HTTP
//! clients (a page, a JSON API under `/api/`) as the signed-in Nimbus user,
//! talking to the meta and data servers as any client of the cluster does.

pub mod api;
pub mod dav;
pub mod download;
pub mod error;
pub mod files;
pub mod page;
pub mod paths;
pub mod serve;
pub mod session;
pub mod signup;
pub mod store;
pub mod zip;

use axum::routing::{any, get, post};
use axum::Router;

/// Every route of the gateway.
pub fn router(app: api::AppState) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/app.css", get(page::style))
        .route("/link.js", get(page::link_script))
        .route("/signup/verify", get(page::link))
        .route("/reset", get(page::link))
        .route("/api/signup", post(signup::sign_up))
        .route("/api/signup/policy", get(signup::policy))
        .route("/api/signup/verify", post(signup::verify))
        .route("/api/reset/request", post(signup::request_reset))
        .route("/api/reset", post(signup::reset))
        .route("/api/login", post(api::login))
        .route("/api/logout", post(api::logout))
        .route("/api/me", get(api::me))
        .route("/api/list", get(api::list))
        .route("/api/list/", get(api::list))
        .route("/api/list/{*path}", get(api::list))
        .route("/api/stat/{*path}", get(api::stat))
        .route(
            "/api/file/{*path}",
            get(download::download).put(api::upload).delete(api::delete),
        )
        .route("/api/zip", get(download::zip))
        .route("/api/zip/", get(download::zip))
        .route("/api/zip/{*path}", get(download::zip))
        .route("/api/mkdir/{*path}", post(api::mkdir))
        .route("/api/rename", post(api::rename))
        .route("/api/shares", get(api::shares).post(api::share))
        .route("/api/shares/revoke", post(api::unshare))
        .route("/dav", any(dav::handle))
        .route("/dav/", any(dav::handle))
        .route("/dav/{*path}", any(dav::handle))
        .fallback(page::not_found)
        .with_state(app)
}
