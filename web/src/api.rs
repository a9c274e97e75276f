//! The JSON API under `/api/`, which the page uses and scripts may too.
//! Paths travel in the URL after the endpoint's prefix (`/api/list/home/bob`)
//! or as strings in JSON bodies; every one is validated by [`StorePath`].
//! Every call acts as the session's user on the meta cluster.

use crate::error::ApiError;
use crate::files;
use crate::paths::StorePath;
use crate::session::{Session, Sessions};
use crate::store::{self, entry, is_dir, resolve, resolve_parent};
use axum::body::Body;
use axum::extract::{OriginalUri, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use nimbus_common::Ino;
use nimbus_proto as pb;
use serde::Deserialize;
use std::sync::Arc;
use tokio_stream::StreamExt;

/// What every handler shares.
pub struct App {
    /// Signed-in sessions.
    pub sessions: Sessions,
    /// WebDAV at /dav/.
    pub dav: dav_server::DavHandler<crate::dav::DavUser>,
}

/// Handlers' shared state.
pub type AppState = Arc<App>;

/// The store path after `prefix` in the raw request URL.
pub(crate) fn url_path(uri: &Uri, prefix: &str) -> Result<StorePath, ApiError> {
    let raw = uri.path().strip_prefix(prefix).unwrap_or("");
    StorePath::from_url(raw)
}

/// `POST /api/login` body.
#[derive(Deserialize)]
pub struct LoginBody {
    user: String,
    password: String,
}

/// Signs in; sets the session cookie and returns the CSRF token. Json
/// insists on `Content-Type: application/json`, which a cross-site form
/// cannot send: that keeps other sites from signing a browser in.
pub async fn login(
    State(app): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<LoginBody>,
) -> Result<Response, ApiError> {
    let (id, session) = app.sessions.sign_in(&body.user, &body.password).await?;
    let mut r = Json(serde_json::json!({ "user": session.user, "csrf": session.csrf })).into_response();
    if let Some(c) = app.sessions.set_cookie(&headers, &id, session.expires) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(r)
}

/// Signs out (on the cluster too) and clears the cookie.
pub async fn logout(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.sessions.sign_out(&headers).await?;
    let mut r = Json(serde_json::json!({ "signed_out": true })).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, app.sessions.clear_cookie(&headers));
    Ok(r)
}

/// Who is signed in, their quota and usage, and the CSRF token (for a page
/// loaded again).
pub async fn me(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let s = app.sessions.check(&headers, false)?;
    let a = s
        .client
        .whoami()
        .await
        .map_err(|e| ApiError::from_client("whoami", e))?;
    Ok(Json(serde_json::json!({
        "user": a.name,
        "uid": a.uid,
        "admin": a.admin,
        "home": a.home,
        "groups": a.groups,
        "quota": {
            "bytes_used": a.used_bytes,
            "bytes_limit": a.quota_bytes,
            "files_used": a.used_inodes,
            "files_limit": a.quota_inodes,
        },
        "csrf": s.csrf,
    }))
    .into_response())
}

/// A folder's entries (uploads in progress left out).
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    let s = app.sessions.check(&headers, false)?;
    let path = url_path(&uri, "/api/list")?;
    let shown = path.to_string();
    let dir = resolve(&s.client, &path).await?;
    if !is_dir(&dir) {
        return Err(ApiError::WrongKind(format!("{shown}: not a folder")));
    }
    let entries: Vec<store::Entry> = store::list(&s.client, Ino(dir.ino), &shown)
        .await?
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    Ok(Json(serde_json::json!({ "path": shown, "entries": entries })).into_response())
}

/// One entry's attributes.
pub async fn stat(
    State(app): State<AppState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    let s = app.sessions.check(&headers, false)?;
    let path = url_path(&uri, "/api/stat")?;
    let a = resolve(&s.client, &path).await?;
    let name = path.names().last().cloned().unwrap_or_else(|| "/".into());
    Ok(Json(entry(&name, &a)).into_response())
}

/// Creates a folder.
pub async fn mkdir(
    State(app): State<AppState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    let s = app.sessions.check(&headers, true)?;
    let path = url_path(&uri, "/api/mkdir")?;
    let (dir, name) = resolve_parent(&s.client, &path).await?;
    let a = s
        .client
        .mkdir(Ino(dir.ino), name.as_bytes(), 0o755)
        .await
        .map_err(|e| ApiError::from_client(&path.to_string(), e))?;
    Ok((StatusCode::CREATED, Json(entry(name, &a))).into_response())
}

/// `POST /api/rename` body.
#[derive(Deserialize)]
pub struct RenameBody {
    from: String,
    to: String,
    #[serde(default)]
    overwrite: bool,
}

/// Renames or moves a file or folder.
pub async fn rename(
    State(app): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<RenameBody>,
) -> Result<Response, ApiError> {
    let s = app.sessions.check(&headers, true)?;
    let from = StorePath::parse(&body.from)?;
    let to = StorePath::parse(&body.to)?;
    store::rename(&s.client, &from, &to, body.overwrite).await?;
    Ok(Json(serde_json::json!({ "from": from.to_string(), "to": to.to_string() })).into_response())
}

/// `?recursive=` and `?overwrite=`, `?download=`.
#[derive(Deserialize, Default)]
pub struct Flags {
    #[serde(default)]
    pub recursive: bool,
    #[serde(default)]
    pub overwrite: bool,
    #[serde(default)]
    pub download: bool,
}

/// Deletes a file, an empty folder, or with `?recursive=true` a folder and
/// everything in it.
pub async fn delete(
    State(app): State<AppState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(flags): Query<Flags>,
) -> Result<Response, ApiError> {
    let s = app.sessions.check(&headers, true)?;
    let path = url_path(&uri, "/api/file")?;
    let shown = path.to_string();
    store::remove(&s.client, &path, flags.recursive).await?;
    Ok(Json(serde_json::json!({ "deleted": shown })).into_response())
}

/// Uploads the request body as a file: streamed into blocks under a
/// temporary name in the same folder, renamed into place only once
/// committed whole. An existing file is replaced only with
/// `?overwrite=true` (else 409).
pub async fn upload(
    State(app): State<AppState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(flags): Query<Flags>,
    body: Body,
) -> Result<Response, ApiError> {
    let s = app.sessions.check(&headers, true)?;
    let path = url_path(&uri, "/api/file")?;
    let shown = path.to_string();
    let (dir, name) = resolve_parent(&s.client, &path).await?;
    let name = name.to_owned();
    let parent = Ino(dir.ino);
    let replaced = match s.client.lookup(parent, name.as_bytes()).await {
        Ok(a) if is_dir(&a) => return Err(ApiError::WrongKind(format!("{shown}: is a folder"))),
        Ok(_) if !flags.overwrite => return Err(ApiError::Exists(shown)),
        Ok(a) => a.size,
        Err(e) if e.errno() == nimbus_common::Errno::ENOENT => 0,
        Err(e) => return Err(ApiError::from_lookup(&shown, e)),
    };
    check_quota_before(&s, &headers, replaced).await?;
    let mut staged =
        files::StagedUpload::begin(s.client.clone(), parent, &name, flags.overwrite, shown.clone()).await?;
    // The rest runs in its own task: if the client goes away, hyper drops
    // this handler, and the upload must still end cleanly (failing on the
    // cut body and removing its temporary file).
    let task = tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => staged.push(&c).await?,
                Err(e) => {
                    staged.discard().await;
                    return Err(ApiError::Interrupted(e.to_string()));
                }
            }
        }
        let size = staged.finish().await?;
        tracing::info!("uploaded {shown} ({size} bytes)");
        Ok((name, size))
    });
    let (name, size) = task
        .await
        .map_err(|e| ApiError::Unavailable(format!("upload task: {e}")))??;
    // What the file is now (someone may have changed it since; the size
    // uploaded is what the client wants to check).
    let attr = s
        .client
        .lookup(parent, name.as_bytes())
        .await
        .map_err(|e| ApiError::from_lookup(&path.to_string(), e))?;
    let mut entry = store::entry(&name, &attr);
    entry.size = size;
    Ok((StatusCode::CREATED, Json(entry)).into_response())
}

/// Refuses at once an upload whose declared length cannot fit the user's
/// quota (the cluster enforces the quota at every commit regardless; this
/// only spares the user the wait).
async fn check_quota_before(s: &Session, headers: &HeaderMap, replaced: u64) -> Result<(), ApiError> {
    let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return Ok(());
    };
    let a = s
        .client
        .whoami()
        .await
        .map_err(|e| ApiError::from_client("whoami", e))?;
    if a.quota_bytes > 0 && a.used_bytes.saturating_sub(replaced).saturating_add(len) > a.quota_bytes {
        return Err(ApiError::Quota(format!(
            "this upload needs {len} bytes, but {} of your {} bytes are used",
            a.used_bytes, a.quota_bytes
        )));
    }
    Ok(())
}

/// Shares the user made or received.
pub async fn shares(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let s = app.sessions.check(&headers, false)?;
    let r = s
        .client
        .account(pb::account_request::Op::ShareList(pb::ShareList {}))
        .await
        .map_err(|e| ApiError::from_client("shares", e))?;
    let pb::account_reply::Result::Shares(list) = r else {
        return Err(ApiError::Unavailable("share list answered oddly".into()));
    };
    let rows: Vec<_> = list
        .shares
        .iter()
        .map(|x| {
            serde_json::json!({
                "path": x.path, "owner": x.owner, "grantee": x.grantee, "rw": x.rw,
                "mine": x.owner == s.user,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "user": s.user, "shares": rows })).into_response())
}

/// `POST /api/shares` and `/api/shares/revoke` body.
#[derive(Deserialize)]
pub struct ShareBody {
    path: String,
    /// A user name or `@group`.
    grantee: String,
    #[serde(default)]
    rw: bool,
}

/// Shares a file or folder with a user or `@group`, read-only or read-write.
pub async fn share(
    State(app): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<ShareBody>,
) -> Result<Response, ApiError> {
    share_change(app, headers, body, true).await
}

/// Revokes a share.
pub async fn unshare(
    State(app): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<ShareBody>,
) -> Result<Response, ApiError> {
    share_change(app, headers, body, false).await
}

async fn share_change(app: AppState, headers: HeaderMap, body: ShareBody, add: bool) -> Result<Response, ApiError> {
    let s = app.sessions.check(&headers, true)?;
    let path = StorePath::parse(&body.path)?;
    let grantee = body.grantee.trim();
    let bare = grantee.strip_prefix('@').unwrap_or(grantee);
    if bare.is_empty() || bare.len() > 255 || bare.contains(['/', '\0']) {
        return Err(ApiError::BadRequest("grantee: a user name or @group".into()));
    }
    let a = resolve(&s.client, &path).await?;
    let op = if add {
        pb::account_request::Op::ShareAdd(pb::ShareAdd {
            ino: a.ino,
            grantee: grantee.to_owned(),
            rw: body.rw,
        })
    } else {
        pb::account_request::Op::ShareRevoke(pb::ShareRevoke {
            ino: a.ino,
            grantee: grantee.to_owned(),
        })
    };
    s.client.account(op).await.map_err(|e| match e {
        nimbus_client::ClientError::NotFound(m) => ApiError::NotFound(m),
        other => ApiError::from_client(&path.to_string(), other),
    })?;
    Ok(Json(serde_json::json!({
        "path": path.to_string(), "grantee": grantee, "rw": body.rw, "shared": add,
    }))
    .into_response())
}
