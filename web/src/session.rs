//! Browser sessions: a sign-in with a Nimbus account gives the browser an
//! opaque random cookie; the gateway keeps, against it, the Nimbus session
//! token the meta cluster granted (never sent to the browser) and a CSRF
//! token that every state-changing request must echo in `X-CSRF-Token`.
//!
//! Each session has its own [`MetaClient`] carrying that user's token, so the
//! meta servers check every request against that user; the gateway decides
//! no permission itself.

use crate::error::ApiError;
use axum::http::{header, HeaderMap, HeaderValue};
use nimbus_client::{ClientError, MetaClient};
use nimbus_common::tls::Security;
use nimbus_proto as pb;
use rand::RngCore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The cookie naming a browser session.
pub const COOKIE: &str = "nimbus_session";

/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How long a call to the cluster may keep retrying before the request fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// A signed-in browser (or API client).
pub struct Session {
    /// The Nimbus user name.
    pub user: String,
    /// Echoed by the client in `X-CSRF-Token` on every change.
    pub csrf: String,
    /// A client of the cluster signed with this user's token.
    pub client: Arc<MetaClient>,
    /// When the Nimbus token expires.
    pub expires: SystemTime,
}

/// How the gateway reaches the cluster and sets its cookies.
#[derive(Clone)]
pub struct ClusterAccess {
    /// TLS towards meta and data servers (the cluster CA).
    pub security: Security,
    /// Meta server addresses.
    pub meta: Vec<String>,
    /// Whether cookies get `Secure` (served over HTTPS).
    pub https: bool,
    /// Whether to believe `X-Forwarded-Proto: https` from a reverse proxy.
    pub trust_forwarded_proto: bool,
    /// How long a sign-in lasts (seconds), as `nimbus login --ttl`.
    pub session_ttl_secs: u64,
    /// Whether passwords may arrive with each request (WebDAV's HTTP
    /// Basic): only over HTTPS or on a loopback address.
    pub basic_auth_allowed: bool,
}

/// How long a password checked for HTTP Basic counts as checked: a changed
/// password or a disabled account takes effect within this.
const BASIC_RECHECK: Duration = Duration::from_secs(300);

/// A sign-in made for HTTP Basic credentials.
struct BasicSignIn {
    session: Arc<Session>,
    checked: std::time::Instant,
}

/// Every live session, by cookie value.
pub struct Sessions {
    access: ClusterAccess,
    by_id: Mutex<HashMap<String, Arc<Session>>>,
    /// Sign-ins for HTTP Basic, by a keyed hash of user and password (the
    /// password itself is never kept).
    basic: Mutex<HashMap<[u8; 32], BasicSignIn>>,
    /// The key of that hash, random per process.
    basic_key: [u8; 32],
}

/// 32 random bytes, hex: session ids and CSRF tokens.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equality that takes the same time wherever the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl Sessions {
    /// No sessions yet, for a cluster reached through `access`.
    pub fn new(access: ClusterAccess) -> Sessions {
        let mut basic_key = [0u8; 32];
        rand::rng().fill_bytes(&mut basic_key);
        Sessions {
            access,
            by_id: Mutex::default(),
            basic: Mutex::default(),
            basic_key,
        }
    }

    /// How the gateway reaches the cluster.
    pub fn access(&self) -> &ClusterAccess {
        &self.access
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session for HTTP Basic credentials: a sign-in made for them in
    /// the last few minutes, else a new one (the cluster checks the
    /// password, with its sign-in brake).
    pub async fn basic(&self, user: &str, password: &str) -> Result<Arc<Session>, ApiError> {
        let mut h = blake3::Hasher::new_keyed(&self.basic_key);
        h.update(&(user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        let key: [u8; 32] = *h.finalize().as_bytes();
        {
            let mut cache = self.basic.lock().unwrap_or_else(|p| p.into_inner());
            let now = SystemTime::now();
            cache.retain(|_, b| b.checked.elapsed() < BASIC_RECHECK && b.session.expires > now);
            if let Some(b) = cache.get(&key) {
                return Ok(b.session.clone());
            }
        }
        let (_, session) = self.sign_in(user, password).await?;
        // Not a browser session: no cookie refers to it.
        self.map().retain(|_, s| !Arc::ptr_eq(s, &session));
        self.basic.lock().unwrap_or_else(|p| p.into_inner()).insert(
            key,
            BasicSignIn {
                session: session.clone(),
                checked: std::time::Instant::now(),
            },
        );
        Ok(session)
    }

    /// Signs `user` in through the meta cluster (its Argon2id check and its
    /// sign-in brake); returns the new session's id and the session.
    pub async fn sign_in(&self, user: &str, password: &str) -> Result<(String, Arc<Session>), ApiError> {
        if user.is_empty() || user.len() > 255 || password.len() > 4096 {
            return Err(ApiError::BadRequest(
                "user name or password of an impossible length".into(),
            ));
        }
        let client = MetaClient::new(self.access.security.clone(), self.access.meta.clone(), DEADLINE)
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        let granted = match client.login(user, password, self.access.session_ttl_secs).await {
            Ok(g) => g,
            Err(ClientError::Unauthenticated(m)) => return Err(ApiError::SignInRefused(m)),
            Err(e) => return Err(ApiError::from_client("sign-in", e)),
        };
        client.set_token(Some(granted.token));
        let session = Arc::new(Session {
            user: granted.account.map(|a| a.name).unwrap_or_else(|| user.to_owned()),
            csrf: random_token(),
            client: Arc::new(client),
            expires: UNIX_EPOCH + Duration::from_millis(granted.expires_ms),
        });
        let id = random_token();
        let mut map = self.map();
        // Forget expired sessions now and then: at each sign-in is enough.
        let now = SystemTime::now();
        map.retain(|_, s| s.expires > now);
        map.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The session of the request's cookie; with `change` (a request that
    /// changes anything) its CSRF header must match too.
    pub fn check(&self, headers: &HeaderMap, change: bool) -> Result<Arc<Session>, ApiError> {
        let id = cookie(headers, COOKIE).ok_or_else(|| ApiError::Unauthenticated("no session cookie".into()))?;
        let session = {
            let mut map = self.map();
            let Some(s) = map.get(id).cloned() else {
                return Err(ApiError::Unauthenticated("unknown or expired session".into()));
            };
            if s.expires <= SystemTime::now() {
                map.remove(id);
                return Err(ApiError::Unauthenticated("session expired".into()));
            }
            s
        };
        if change {
            let sent = headers.get(CSRF_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
            if !same(sent, session.csrf.as_bytes()) {
                return Err(ApiError::Csrf);
            }
        }
        Ok(session)
    }

    /// Forgets the request's session (the cluster refused its token).
    pub fn drop_session(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            self.map().remove(id);
        }
    }

    /// Signs out: ends the Nimbus sign-in on the cluster and forgets the
    /// session.
    pub async fn sign_out(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let session = self.check(headers, true)?;
        self.drop_session(headers);
        // The cluster ends the sign-in for every user of the token; a failure
        // here still leaves the browser signed out.
        if let Err(e) = session
            .client
            .account(pb::account_request::Op::Logout(pb::Logout {}))
            .await
        {
            tracing::warn!("signing {} out of the cluster: {e}", session.user);
        }
        Ok(())
    }

    /// Whether the response to this request may carry a `Secure` cookie.
    fn secure(&self, headers: &HeaderMap) -> bool {
        self.access.https
            || (self.access.trust_forwarded_proto
                && headers
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.eq_ignore_ascii_case("https")))
    }

    /// The `Set-Cookie` value for session `id` expiring at `expires`.
    pub fn set_cookie(&self, headers: &HeaderMap, id: &str, expires: SystemTime) -> Option<HeaderValue> {
        let max_age = expires
            .duration_since(SystemTime::now())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let secure = if self.secure(headers) { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
        ))
        .ok()
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub fn clear_cookie(&self, headers: &HeaderMap) -> HeaderValue {
        let secure = if self.secure(headers) { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("nimbus_session=; Path=/; Max-Age=0"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; nimbus_session=abc; b=2"));
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(!same(b"", b"x"));
        assert_ne!(random_token(), random_token());
    }
}
