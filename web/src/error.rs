//! Every failure of a request, and the one place that turns it into an HTTP
//! status and a JSON body `{"error": "..."}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_client::ClientError;
use nimbus_common::Errno;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A path or name the gateway will not pass on (`..`, NUL, too long ...).
    #[error("bad path: {0}")]
    BadPath(String),
    /// A malformed request (body, query, header).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No valid browser session, or the cluster no longer accepts its token.
    #[error("not signed in: {0}")]
    Unauthenticated(String),
    /// The user name or password is wrong (or the sign-in brake refused).
    #[error("sign-in refused: {0}")]
    SignInRefused(String),
    /// A state-changing request without the session's CSRF token.
    #[error("missing or wrong CSRF token (send the token from /api/login or /api/me in X-CSRF-Token)")]
    Csrf,
    /// Nothing by that name the user may see (also: exists but hidden).
    #[error("not found: {0}")]
    NotFound(String),
    /// The user may see it but not do this to it.
    #[error("permission denied: {0}")]
    Forbidden(String),
    /// The target name exists already.
    #[error("already exists: {0}")]
    Exists(String),
    /// A folder that is not empty (delete without `recursive`).
    #[error("folder not empty: {0}")]
    NotEmpty(String),
    /// A folder where a file is wanted or the other way round.
    #[error("{0}")]
    WrongKind(String),
    /// The user's quota would be exceeded.
    #[error("quota exceeded: {0}")]
    Quota(String),
    /// The cluster has no room for the data.
    #[error("no space left in the cluster: {0}")]
    NoSpace(String),
    /// A Range header outside the file.
    #[error("range not satisfiable")]
    Range { size: u64 },
    /// The cluster could not be reached or failed.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The upload's body ended early or could not be read.
    #[error("upload interrupted: {0}")]
    Interrupted(String),
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadPath(_) | ApiError::BadRequest(_) | ApiError::Interrupted(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated(_) | ApiError::SignInRefused(_) => StatusCode::UNAUTHORIZED,
            ApiError::Csrf | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Exists(_) | ApiError::NotEmpty(_) | ApiError::WrongKind(_) => StatusCode::CONFLICT,
            ApiError::Quota(_) | ApiError::NoSpace(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Range { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// `e`, from an operation on `what`, a path the user can see: a refusal
    /// there is a 403, a vanished entry a 404.
    pub fn from_client(what: &str, e: ClientError) -> ApiError {
        match e {
            ClientError::QuotaExceeded(m) => ApiError::Quota(m),
            ClientError::NoSpace(m) => ApiError::NoSpace(m),
            ClientError::Unauthenticated(m) => ApiError::Unauthenticated(m),
            ClientError::Unavailable(m) | ClientError::DataUnavailable(m) | ClientError::Setup(m) => {
                ApiError::Unavailable(m)
            }
            ClientError::Denied(_) => ApiError::Forbidden(what.to_owned()),
            ClientError::NotFound(_) => ApiError::NotFound(what.to_owned()),
            ClientError::Exists(_) => ApiError::Exists(what.to_owned()),
            ClientError::Refused(m) => ApiError::BadRequest(m),
            ClientError::Errno(errno) => ApiError::from_errno(what, errno),
        }
    }

    /// An errno the namespace answered for an operation on `what`.
    pub fn from_errno(what: &str, errno: Errno) -> ApiError {
        let what = what.to_owned();
        match errno {
            Errno::ENOENT => ApiError::NotFound(what),
            Errno::EACCES | Errno::EPERM => ApiError::Forbidden(what),
            Errno::EEXIST => ApiError::Exists(what),
            Errno::ENOTEMPTY => ApiError::NotEmpty(what),
            Errno::ENOTDIR => ApiError::WrongKind(format!("{what}: not a folder")),
            Errno::EISDIR => ApiError::WrongKind(format!("{what}: is a folder")),
            Errno::EDQUOT => ApiError::Quota(format!("{what}: over your quota")),
            Errno::ENOSPC => ApiError::NoSpace(what),
            Errno::ENAMETOOLONG => ApiError::BadPath(format!("{what}: name too long")),
            Errno::EINVAL => ApiError::BadRequest(format!("{what}: invalid (e.g. a folder moved into itself)")),
            other => ApiError::Unavailable(format!("{what}: {other}")),
        }
    }

    /// `e` met while finding `what` by its path: any refusal on the way
    /// is a 404, so that the names in other people's private folders do not
    /// leak through the difference between "forbidden" and "absent".
    pub fn from_lookup(what: &str, e: ClientError) -> ApiError {
        match e {
            ClientError::Errno(Errno::ENOENT | Errno::EACCES | Errno::EPERM | Errno::ENOTDIR)
            | ClientError::NotFound(_) => ApiError::NotFound(what.to_owned()),
            // A refused session is not a refused name: 401, not 404.
            other => ApiError::from_client(what, other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!("{status}: {self}");
        } else {
            tracing::debug!("{status}: {self}");
        }
        let body = serde_json::json!({ "error": self.to_string(), "status": status.as_u16() });
        let mut r = (status, axum::Json(body)).into_response();
        if let ApiError::Range { size } = self {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        r
    }
}
