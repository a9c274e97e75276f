//! Who a request comes from: session tokens in, identities out; password
//! hashing; and the brake on repeated failed sign-ins.

use crate::commit::ReadBarrier;
use crate::namespace::accounts::{self, User};
use crate::namespace::{Caller, Txn};
use crate::store::Store;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use nimbus_common::token::{SessionClaims, Signer, TokenError, Verifier};
use nimbus_common::Uid;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Request, Status};

/// Failed sign-ins of one name that are answered at once; each one after
/// that doubles the wait before the answer.
const FREE_FAILURES: u32 = 3;
/// Longest wait before answering a sign-in.
const MAX_DELAY: Duration = Duration::from_secs(30);
/// Failures older than this are forgotten.
const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);
/// Shortest password accepted for a new account or a change.
pub const MIN_PASSWORD: usize = 8;
/// Longest password accepted (Argon2 takes any length; a bound keeps
/// hashing cheap).
pub const MAX_PASSWORD: usize = 1024;

/// A signed-in user, as checked for this request.
#[derive(Clone)]
pub struct Identity {
    pub user: User,
    pub caller: Caller,
    /// The sign-in the token belongs to.
    pub sign_in: [u8; 16],
}

/// Checks tokens against the signing key and the replicated state.
pub struct Auth {
    store: Arc<dyn Store>,
    signer: Option<Arc<Signer>>,
    verifier: Option<Verifier>,
    barrier: ReadBarrier,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    /// Tokens already checked: a mount sends the same one with every
    /// request. The signature is verified once; who the token is holds while
    /// the accounts' generation stays the same (any sign-out, disable,
    /// removal or membership change moves it). Expiry is checked every time.
    verified: Mutex<HashMap<String, Known>>,
}

/// What is known of a token.
#[derive(Clone)]
struct Known {
    claims: SessionClaims,
    /// The identity, as of an accounts generation.
    identity: Option<(u64, Identity)>,
}

/// Most user names whose failed sign-ins are remembered.
const FAILURES_MAX: usize = 10_000;

/// Most verified tokens remembered; past it the memory starts afresh.
const VERIFIED_MAX: usize = 4096;

fn unauthenticated(why: impl std::fmt::Display) -> Status {
    Status::unauthenticated(why.to_string())
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!("storage failure checking a sign-in: {e}");
    Status::internal("meta server storage failure")
}

impl Auth {
    /// Checks tokens with `signer`'s key (None: this node cannot, and says so).
    pub fn new(store: Arc<dyn Store>, signer: Option<Arc<Signer>>, barrier: ReadBarrier) -> Auth {
        let verifier = signer.as_ref().map(|s| s.verifier());
        Auth {
            store,
            signer,
            verifier,
            barrier,
            failures: Mutex::default(),
            verified: Mutex::default(),
        }
    }

    /// The key that signs session tokens.
    pub fn signer(&self) -> Result<&Signer, Status> {
        self.signer.as_deref().ok_or_else(|| {
            Status::unavailable("this meta server has no token key (--token-dir): it cannot sign anyone in")
        })
    }

    /// The signed-in user of `request`. Reads the local state: on a node
    /// that may lag (not the leader), a refusal is first checked against
    /// leadership, so that the client is sent to the leader rather than
    /// turned away.
    pub async fn identify<T>(&self, request: &Request<T>) -> Result<Identity, Status> {
        match self.identify_here(request) {
            Ok(id) => Ok(id),
            Err(status) => {
                self.barrier.wait().await?;
                match self.identify_here(request) {
                    Ok(id) => Ok(id),
                    Err(_) => Err(status),
                }
            }
        }
    }

    fn identify_here<T>(&self, request: &Request<T>) -> Result<Identity, Status> {
        let verifier = self
            .verifier
            .as_ref()
            .ok_or_else(|| Status::unavailable("this meta server has no token key (--token-dir)"))?;
        let token = request
            .metadata()
            .get(nimbus_proto::TOKEN_KEY)
            .ok_or_else(|| unauthenticated("not signed in: run `nimbus login`"))?
            .to_str()
            .map_err(|_| unauthenticated("the session token is not valid text"))?;
        let expired = || unauthenticated("your session expired: run `nimbus login` again");
        let known = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned();
        let txn = Txn::new(self.store.as_ref());
        let generation = accounts::generation(&txn).map_err(internal)?;
        let claims = match known {
            Some(k) if k.claims.expires_ms < nimbus_common::token::now_ms() => return Err(expired()),
            Some(Known {
                identity: Some((g, id)),
                ..
            }) if g == generation => return Ok(id),
            Some(k) => k.claims,
            None => verifier.check_session(token).map_err(|e| match e {
                TokenError::Expired => expired(),
                TokenError::BadSignature => unauthenticated(
                    "the session token is not valid: it was altered or comes from another cluster; run `nimbus login`",
                ),
                _ => unauthenticated("the session token is malformed; run `nimbus login`"),
            })?,
        };
        let identity = self.identity_of(&txn, &claims);
        let mut v = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() >= VERIFIED_MAX {
            v.clear();
        }
        v.insert(
            token.to_owned(),
            Known {
                claims,
                identity: identity.as_ref().ok().map(|id| (generation, id.clone())),
            },
        );
        identity
    }

    /// Who a genuine, unexpired token is, from the state.
    fn identity_of(&self, txn: &Txn, claims: &SessionClaims) -> Result<Identity, Status> {
        let sign_in = accounts::sign_in(txn, &claims.id)
            .map_err(internal)?
            .ok_or_else(|| unauthenticated("your session was ended (logged out or revoked): run `nimbus login`"))?;
        let user = accounts::user_by_uid(txn, Uid(claims.uid))
            .map_err(internal)?
            .filter(|u| sign_in.uid == u.uid)
            .ok_or_else(|| unauthenticated("your account no longer exists"))?;
        if user.disabled {
            return Err(unauthenticated(format!("account {} is disabled", user.name)));
        }
        let caller = accounts::caller_of(txn, &user).map_err(internal)?;
        Ok(Identity {
            user,
            caller,
            sign_in: claims.id,
        })
    }

    /// Waits as long as recent failed sign-ins of `name` call for.
    pub async fn brake(&self, name: &str) {
        let delay = {
            let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            f.retain(|_, (_, at)| at.elapsed() < FAILURE_MEMORY);
            match f.get(name) {
                Some((n, _)) if *n >= FREE_FAILURES => {
                    let doublings = (*n - FREE_FAILURES).min(8);
                    (Duration::from_millis(500) * 2u32.pow(doublings)).min(MAX_DELAY)
                }
                _ => Duration::ZERO,
            }
        };
        if !delay.is_zero() {
            tracing::warn!(user = name, ?delay, "slowing down sign-in after repeated failures");
            tokio::time::sleep(delay).await;
        }
    }

    /// Records a failed sign-in of `name`, or forgets them after a success.
    pub fn record(&self, name: &str, failed: bool) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failed {
            // Bounded whatever names are tried: past the bound, the oldest
            // failure is forgotten.
            if f.len() >= FAILURES_MAX && !f.contains_key(name) {
                f.retain(|_, (_, at)| at.elapsed() < FAILURE_MEMORY);
                if f.len() >= FAILURES_MAX {
                    if let Some(oldest) = f.iter().min_by_key(|(_, (_, at))| *at).map(|(n, _)| n.clone()) {
                        f.remove(&oldest);
                    }
                }
            }
            let e = f.entry(name.to_owned()).or_insert((0, Instant::now()));
            e.0 = e.0.saturating_add(1);
            e.1 = Instant::now();
        } else {
            f.remove(name);
        }
    }
}

/// Checks a new password's length.
pub fn validate_password(password: &str) -> Result<(), Status> {
    if password.len() < MIN_PASSWORD {
        return Err(Status::invalid_argument(format!(
            "a password needs at least {MIN_PASSWORD} characters"
        )));
    }
    if password.len() > MAX_PASSWORD {
        return Err(Status::invalid_argument(format!(
            "a password has at most {MAX_PASSWORD} characters"
        )));
    }
    Ok(())
}

/// Argon2id computations at once: each takes 19 MiB for its duration, so a
/// storm of sign-ins (a hundred mounts restarting) would otherwise take
/// gigabytes at once, and the allocator keeps what it once held. The cores
/// are busy with that many anyway.
static ARGON2_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Runs `f` (an Argon2id computation) on the blocking pool in one of the
/// [`ARGON2_SLOTS`].
async fn argon2_work<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    let _slot = ARGON2_SLOTS
        .acquire()
        .await
        .map_err(|e| Status::internal(format!("password check: {e}")))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("password check: {e}")))
}

/// The Argon2id hash (PHC string) of `password`, computed off the runtime.
pub async fn hash_password(password: String) -> Result<String, Status> {
    argon2_work(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| Status::internal(format!("hashing the password: {e}")))
    })
    .await?
}

/// Whether `password` matches the stored `hash`, computed off the runtime.
pub async fn password_matches(password: String, hash: String) -> bool {
    argon2_work(move || {
        if password.len() > MAX_PASSWORD {
            return false;
        }
        Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false)
}
