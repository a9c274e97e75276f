//! Sign-up, address verification and password reset in the browser: the
//! JSON endpoints the page's forms use (no session: they are how people
//! without one get in) and the pages the links in mail open. The meta
//! servers decide everything; their refusals reach the person as they said
//! them.

use crate::api::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nimbus_client::{ClientError, MetaClient};
use nimbus_proto as pb;
use nimbus_proto::account_reply::Result as R;
use nimbus_proto::account_request::Op;
use serde::Deserialize;
use std::time::Duration;

/// A refusal with the cluster's own words.
fn refusal(e: ClientError) -> Response {
    let status = match &e {
        ClientError::Denied(_) => StatusCode::FORBIDDEN,
        ClientError::NotFound(_) => StatusCode::NOT_FOUND,
        ClientError::Exists(_) => StatusCode::CONFLICT,
        ClientError::Refused(_) | ClientError::Errno(_) => StatusCode::BAD_REQUEST,
        ClientError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        ClientError::NoSpace(_) | ClientError::QuotaExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    // A refusal relayed from a meta server names it first ("addr: why").
    let text = e.to_string();
    let text = match text.split_once(": ") {
        Some((addr, why)) if addr.parse::<std::net::SocketAddr>().is_ok() => why.to_owned(),
        _ => text,
    };
    (status, Json(serde_json::json!({ "error": text }))).into_response()
}

async fn call(app: &AppState, op: Op) -> Result<R, Response> {
    let access = app.sessions.access();
    let client =
        MetaClient::new(access.security.clone(), access.meta.clone(), Duration::from_secs(20)).map_err(refusal)?;
    client.account(op).await.map_err(refusal)
}

fn said(message: &str) -> Response {
    Json(serde_json::json!({ "ok": true, "message": message })).into_response()
}

/// `GET /api/signup/policy`: whether the page offers sign-up, and to whom.
pub async fn policy(State(app): State<AppState>) -> Response {
    match call(&app, Op::SignupPolicyGet(pb::SignupPolicyGet {})).await {
        Ok(R::SignupPolicy(p)) => Json(serde_json::json!({ "mode": p.mode, "domains": p.domains })).into_response(),
        Ok(_) => (StatusCode::BAD_GATEWAY, "unexpected answer").into_response(),
        Err(r) => r,
    }
}

/// A sign-up form.
#[derive(Deserialize)]
pub struct SignupBody {
    name: String,
    email: String,
    password: String,
}

/// `POST /api/signup`.
pub async fn sign_up(State(app): State<AppState>, Json(b): Json<SignupBody>) -> Response {
    let op = Op::Signup(pb::Signup {
        name: b.name,
        email: b.email.clone(),
        password: b.password,
    });
    match call(&app, op).await {
        Ok(_) => said(&format!(
            "Almost there: we sent a link to {}. Follow it to finish creating your account.",
            b.email
        )),
        Err(r) => r,
    }
}

/// A link's token (and a new password, for a reset).
#[derive(Deserialize)]
pub struct TokenBody {
    token: String,
    #[serde(default)]
    password: String,
}

/// `POST /api/signup/verify`.
pub async fn verify(State(app): State<AppState>, Json(b): Json<TokenBody>) -> Response {
    match call(&app, Op::SignupVerify(pb::SignupVerify { token: b.token })).await {
        Ok(_) => said("Your address is verified and your account is ready: sign in."),
        Err(r) => r,
    }
}

/// An address to send a reset link to.
#[derive(Deserialize)]
pub struct ResetRequestBody {
    email: String,
}

/// `POST /api/reset/request`: the same answer whether or not the address
/// has an account.
pub async fn request_reset(State(app): State<AppState>, Json(b): Json<ResetRequestBody>) -> Response {
    match call(&app, Op::ResetRequest(pb::ResetRequest { email: b.email })).await {
        Ok(_) => said("If an account has this address, a link to set a new password is on its way."),
        Err(r) => r,
    }
}

/// `POST /api/reset`.
pub async fn reset(State(app): State<AppState>, Json(b): Json<TokenBody>) -> Response {
    let op = Op::ResetPassword(pb::ResetPassword {
        token: b.token,
        password: b.password,
    });
    match call(&app, op).await {
        Ok(_) => said("Your new password is set, and every earlier session has ended: sign in."),
        Err(r) => r,
    }
}
