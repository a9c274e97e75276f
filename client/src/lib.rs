//! Client of the Nimbus meta cluster: finds the leader, follows redirects,
//! retries through elections and outages up to a deadline, and offers typed
//! namespace calls.

use nimbus_common::tls::{Security, MAX_MESSAGE_BYTES};
use nimbus_common::{Errno, Ino};
use nimbus_proto as pb;
use nimbus_proto::admin_client::AdminClient;
use nimbus_proto::namespace_client::NamespaceClient;
use nimbus_proto::ns_reply::Result as R;
use nimbus_proto::ns_request::Op;
use nimbus_proto::Reason;
pub mod blocks;
pub mod counters;
pub mod profile;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The namespace answered with a POSIX error.
    #[error("{0}")]
    Errno(Errno),
    /// No leader answered before the deadline.
    #[error("meta cluster unavailable: {0}")]
    Unavailable(String),
    /// The request was refused as malformed or not permitted.
    #[error("{0}")]
    Refused(String),
    /// The client was set up wrongly (bad address, TLS files).
    #[error("{0}")]
    Setup(String),
    /// No data server has room.
    #[error("{0}")]
    NoSpace(String),
    /// No valid sign-in: none, expired, revoked, or a wrong password.
    #[error("{0}")]
    Unauthenticated(String),
    /// Signed in, but not allowed (e.g. not an administrator).
    #[error("{0}")]
    Denied(String),
    /// The named user, group or file does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The user, group or name exists already.
    #[error("{0}")]
    Exists(String),
    /// A quota would be exceeded.
    #[error("{0}")]
    QuotaExceeded(String),
    /// Every replica of a block failed.
    #[error("{0}")]
    DataUnavailable(String),
}

impl ClientError {
    /// The errno a file system returns for this error.
    pub fn errno(&self) -> Errno {
        match self {
            ClientError::Errno(e) => *e,
            ClientError::Unavailable(_) => Errno::EIO,
            ClientError::Refused(_) => Errno::EINVAL,
            ClientError::Setup(_) => Errno::EIO,
            ClientError::NoSpace(_) => Errno::ENOSPC,
            ClientError::Unauthenticated(_) | ClientError::Denied(_) => Errno::EACCES,
            ClientError::NotFound(_) => Errno::ENOENT,
            ClientError::Exists(_) => Errno::EEXIST,
            ClientError::QuotaExceeded(_) => Errno::EDQUOT,
            ClientError::DataUnavailable(_) => Errno::EIO,
        }
    }
}

/// Longest pause between attempts while no leader answers.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// How long one RPC may take before the client tries elsewhere.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on the meta cluster; cheap to share between tasks.
pub struct MetaClient {
    security: Security,
    seeds: Vec<String>,
    channels: Mutex<HashMap<String, Channel>>,
    leader: Mutex<Option<String>>,
    deadline: Duration,
    caller: pb::Caller,
    /// Send the caller as the identity to act as (administrators only).
    act_as: bool,
    /// The session token every request carries.
    token: Mutex<Option<String>>,
    /// The profile the token came from, read again when the cluster refuses
    /// the token (the user may have signed in anew meanwhile).
    profile: Option<String>,
    /// A user and password to sign in with when there is no token (tools
    /// and tests that hold the password anyway).
    password: Option<(String, String)>,
    /// Calls made and bytes moved, for the mount's metrics.
    counters: counters::Counters,
    /// Store blocks unencrypted (benchmarks of what encryption costs; the
    /// cluster accepts them only with --allow-clear-blocks).
    clear_blocks: bool,
}

impl MetaClient {
    /// A client that knows the cluster through `seeds` (`host:port`, any
    /// members) and gives up on a call after `deadline`.
    pub fn new(security: Security, seeds: Vec<String>, deadline: Duration) -> Result<MetaClient, ClientError> {
        if seeds.is_empty() {
            return Err(ClientError::Setup("no meta server address given".into()));
        }
        Ok(MetaClient {
            security,
            seeds,
            channels: Mutex::default(),
            leader: Mutex::default(),
            deadline,
            caller: pb::Caller { uid: 0, gids: vec![0] },
            act_as: false,
            token: Mutex::default(),
            profile: None,
            password: None,
            counters: counters::Counters::default(),
            clear_blocks: false,
        })
    }

    /// Acts as `uid` with groups `gids` (primary first) from now on, rather
    /// than as the signed-in user: the cluster allows it administrators only.
    /// Stores blocks unencrypted: only for measuring what encryption costs,
    /// against a cluster started with --allow-clear-blocks.
    pub fn with_clear_blocks(mut self, yes: bool) -> MetaClient {
        self.clear_blocks = yes;
        self
    }

    pub fn with_caller(mut self, uid: u32, gids: Vec<u32>) -> MetaClient {
        self.caller = pb::Caller { uid, gids };
        self.act_as = true;
        self
    }

    /// Whether callers given to [`MetaClient::call_as`] are acted as, rather
    /// than the signed-in user (administrators only).
    pub fn act_as_callers(mut self, yes: bool) -> MetaClient {
        self.act_as = yes;
        self
    }

    /// Signs requests with the token stored in profile `name` (and with a
    /// newer one stored there later).
    pub fn with_profile(mut self, name: &str) -> Result<MetaClient, ClientError> {
        let stored = profile::load(name).map_err(|e| ClientError::Setup(e.to_string()))?;
        self.set_token(stored.map(|p| p.token));
        self.profile = Some(name.to_owned());
        Ok(self)
    }

    /// Signs in as `user` with `password` by itself, at the first request
    /// and whenever the cluster refuses the token; a new cluster that has yet
    /// to create the account is waited for, up to the deadline.
    pub fn with_password(mut self, user: &str, password: &str) -> MetaClient {
        self.password = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Signs in with the stored password if there is one and no token.
    pub(crate) async fn ensure_signed_in(&self) -> Result<(), ClientError> {
        let Some((user, password)) = &self.password else {
            return Ok(());
        };
        if self.token.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            return Ok(());
        }
        let started = Instant::now();
        loop {
            match self.login(user, password, 0).await {
                Ok(granted) => {
                    self.set_token(Some(granted.token));
                    return Ok(());
                }
                Err(ClientError::Unauthenticated(_)) if started.elapsed() < self.deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the profile again; true if it holds a token other than the one
    /// in use.
    fn reload_token(&self) -> bool {
        let Some(name) = &self.profile else {
            return false;
        };
        let Ok(Some(stored)) = profile::load(name) else {
            return false;
        };
        let mut token = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if token.as_deref() == Some(stored.token.as_str()) {
            return false;
        }
        *token = Some(stored.token);
        true
    }

    /// What this client has asked of the cluster so far.
    pub fn counters(&self) -> &counters::Counters {
        &self.counters
    }

    /// Signs every request from now on with session `token`.
    pub fn set_token(&self, token: Option<String>) {
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = token;
    }

    /// `message` as a request carrying the session token.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        let token = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(v) = token.and_then(|t| tonic::metadata::MetadataValue::try_from(t.as_str()).ok()) {
            r.metadata_mut().insert(nimbus_proto::TOKEN_KEY, v);
        }
        r
    }

    /// The shared channel to `addr`.
    pub fn channel(&self, addr: &str) -> Result<Channel, ClientError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c = self
            .security
            .endpoint(addr)
            .map_err(|e| ClientError::Setup(e.to_string()))?
            .connect_lazy();
        channels.insert(addr.to_owned(), c.clone());
        Ok(c)
    }

    /// The node believed to lead, else the `attempt`-th seed.
    fn target(&self, attempt: usize) -> String {
        let leader = self.leader.lock().unwrap_or_else(|p| p.into_inner()).clone();
        leader.unwrap_or_else(|| self.seeds[attempt % self.seeds.len()].clone())
    }

    fn set_leader(&self, addr: Option<String>) {
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = addr;
    }

    /// Runs `rpc` against the leader, following redirects and retrying on
    /// unavailability until the deadline.
    ///
    /// A write whose reply was lost may have been applied: retried, it can
    /// answer e.g. EEXIST for a create that did happen.
    pub async fn on_leader<T, F, Fut>(&self, rpc: F) -> Result<T, ClientError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(20);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let addr = self.target(attempt);
            let status = match tokio::time::timeout(RPC_TIMEOUT, rpc(self.channel(&addr)?)).await {
                Ok(Ok(reply)) => return Ok(reply.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded(format!("{addr} did not answer in {RPC_TIMEOUT:?}")),
            };
            let reason = Reason::of(&status);
            match status.code() {
                _ if reason == Some(Reason::Quota) => {
                    return Err(ClientError::QuotaExceeded(status.message().to_owned()))
                }
                // A block the cluster does not know: its file's data is gone.
                _ if reason == Some(Reason::UnknownBlock) => {
                    return Err(ClientError::DataUnavailable(status.message().to_owned()))
                }
                Code::FailedPrecondition if status.metadata().contains_key(nimbus_proto::LEADER_ID_KEY) => {
                    let leader = status
                        .metadata()
                        .get(nimbus_proto::LEADER_ADDR_KEY)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let same = leader.as_deref() == Some(addr.as_str());
                    self.set_leader(leader);
                    if !same {
                        continue;
                    }
                }
                Code::FailedPrecondition if reason == Some(Reason::NotLeader) => self.set_leader(None),
                Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled | Code::Aborted => {
                    self.set_leader(None)
                }
                Code::ResourceExhausted => return Err(ClientError::NoSpace(status.message().to_owned())),
                Code::Unauthenticated if self.reload_token() => continue,
                Code::Unauthenticated => return Err(ClientError::Unauthenticated(status.message().to_owned())),
                Code::PermissionDenied => return Err(ClientError::Denied(status.message().to_owned())),
                Code::NotFound => return Err(ClientError::NotFound(status.message().to_owned())),
                Code::AlreadyExists => return Err(ClientError::Exists(status.message().to_owned())),
                _ => return Err(ClientError::Refused(format!("{addr}: {}", status.message()))),
            }
            if started.elapsed() >= self.deadline {
                return Err(ClientError::Unavailable(format!(
                    "last answer from {addr}: {}",
                    status.message()
                )));
            }
            tokio::time::sleep(backoff).await;
            // An election takes about one election timeout; polling a few
            // times a second finds the new leader without flooding anyone.
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Sends one namespace operation and returns its result.
    pub async fn call(&self, op: Op) -> Result<R, ClientError> {
        self.call_as(self.caller.clone(), op).await
    }

    /// Sends one namespace operation on behalf of `caller`.
    pub async fn call_as(&self, caller: pb::Caller, op: Op) -> Result<R, ClientError> {
        self.ensure_signed_in().await?;
        self.counters.namespace(&op);
        let read = counters::is_read(&op);
        // One id for every retry of this call: the cluster applies it once.
        let req = pb::NsRequest {
            caller: Some(caller),
            act_as_caller: self.act_as,
            op: Some(op),
            request_id: new_request_id(),
        };
        let reply = self
            .on_leader(|ch| {
                let req = self.request(req.clone());
                async move {
                    NamespaceClient::new(ch)
                        .max_decoding_message_size(MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES)
                        .call(req)
                        .await
                }
            })
            .await;
        self.counters.namespace_done(read);
        let reply = reply?;
        match reply.result {
            Some(R::Failure(f)) => Err(ClientError::Errno(Errno(f.errno))),
            Some(r) => Ok(r),
            None => Err(ClientError::Refused("empty reply".into())),
        }
    }

    /// Sends one account operation (sign-in, users, groups, quotas, shares).
    pub async fn account(&self, op: pb::account_request::Op) -> Result<pb::account_reply::Result, ClientError> {
        if !matches!(op, pb::account_request::Op::Login(_)) {
            self.ensure_signed_in().await?;
        }
        self.account_unsigned(op).await
    }

    /// [`MetaClient::account`] without signing in first.
    async fn account_unsigned(&self, op: pb::account_request::Op) -> Result<pb::account_reply::Result, ClientError> {
        counters::Counters::add(&self.counters.account_calls, 1);
        let req = pb::AccountRequest {
            request_id: new_request_id(),
            op: Some(op),
        };
        let reply = self
            .on_leader(|ch| {
                let req = self.request(req.clone());
                async move {
                    pb::account_service_client::AccountServiceClient::new(ch)
                        .call(req)
                        .await
                }
            })
            .await?;
        reply.result.ok_or_else(|| ClientError::Refused("empty reply".into()))
    }

    /// Signs in as `user`: returns the granted token (not yet used by this
    /// client: see [`MetaClient::set_token`]).
    pub async fn login(&self, user: &str, password: &str, ttl_secs: u64) -> Result<pb::LoginGranted, ClientError> {
        let op = pb::account_request::Op::Login(pb::Login {
            user: user.to_owned(),
            password: password.to_owned(),
            ttl_secs,
        });
        match self.account_unsigned(op).await? {
            pb::account_reply::Result::Login(g) => Ok(g),
            _ => Err(ClientError::Refused("sign-in answered oddly".into())),
        }
    }

    /// Every user's and group's name and id (any signed-in user may ask).
    pub async fn directory(&self) -> Result<pb::Directory, ClientError> {
        match self
            .account(pb::account_request::Op::Directory(pb::DirectoryGet {}))
            .await?
        {
            pb::account_reply::Result::Directory(d) => Ok(d),
            _ => Err(ClientError::Refused("the directory request answered oddly".into())),
        }
    }

    /// Who the client is signed in as.
    pub async fn whoami(&self) -> Result<pb::Account, ClientError> {
        match self.account(pb::account_request::Op::Whoami(pb::WhoAmI {})).await? {
            pb::account_reply::Result::Account(a) => Ok(a),
            _ => Err(ClientError::Refused("whoami answered oddly".into())),
        }
    }

    /// Status of one node, asked directly (no leader redirect).
    pub async fn node_status(&self, addr: &str) -> Result<pb::NodeStatus, ClientError> {
        let mut admin = AdminClient::new(self.channel(addr)?);
        match tokio::time::timeout(RPC_TIMEOUT, admin.status(pb::StatusRequest {})).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(ClientError::Unavailable(format!("{addr}: {}", s.message()))),
            Err(_) => Err(ClientError::Unavailable(format!("{addr}: no answer"))),
        }
    }

    /// A digest of one node's applied namespace.
    pub async fn node_digest(&self, addr: &str) -> Result<pb::DigestReply, ClientError> {
        let mut admin = AdminClient::new(self.channel(addr)?);
        admin
            .digest(pb::DigestRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| ClientError::Unavailable(format!("{addr}: {}", s.message())))
    }

    /// An admin client of the leader, for [`MetaClient::on_leader`].
    pub fn admin(ch: Channel) -> AdminClient<Channel> {
        AdminClient::new(ch)
    }
}

fn attr(r: R) -> Result<pb::Attr, ClientError> {
    match r {
        R::Attr(a) => Ok(a),
        other => Err(ClientError::Refused(format!("unexpected reply {other:?}"))),
    }
}

/// Typed namespace calls.
impl MetaClient {
    /// The attributes of `name` in `parent`.
    pub async fn lookup(&self, parent: Ino, name: &[u8]) -> Result<pb::Attr, ClientError> {
        attr(
            self.call(Op::Lookup(pb::Lookup {
                parent: parent.0,
                name: name.to_vec(),
            }))
            .await?,
        )
    }

    /// The attributes of `ino`.
    pub async fn getattr(&self, ino: Ino) -> Result<pb::Attr, ClientError> {
        attr(self.call(Op::Getattr(pb::GetAttr { ino: ino.0 })).await?)
    }

    /// Creates a node of `kind` (not a symlink) named `name` in `parent`.
    pub async fn make_node(
        &self,
        parent: Ino,
        name: &[u8],
        kind: pb::FileKind,
        perm: u32,
    ) -> Result<pb::Attr, ClientError> {
        attr(
            self.call(Op::MakeNode(pb::MakeNode {
                parent: parent.0,
                name: name.to_vec(),
                kind: kind as i32,
                perm,
                rdev: 0,
                symlink_target: Vec::new(),
                umask: None,
                ..Default::default()
            }))
            .await?,
        )
    }

    /// The attributes `node` would get if created now for `caller`, or the
    /// error it would meet (EEXIST, EACCES, ...); nothing changes.
    pub async fn plan_make_node_as(&self, caller: pb::Caller, node: pb::MakeNode) -> Result<pb::Attr, ClientError> {
        attr(self.call_as(caller, Op::PlanMakeNode(node)).await?)
    }

    /// Reserves up to `count` inode numbers for mount session `session`:
    /// the first one and how many.
    pub async fn reserve_inodes(&self, session: u64, count: u32) -> Result<(Ino, u32), ClientError> {
        match self
            .call(Op::ReserveInodes(pb::ReserveInodes { session, count }))
            .await?
        {
            R::Inodes(r) if r.count > 0 && r.first > 0 => Ok((Ino(r.first), r.count)),
            other => Err(ClientError::Refused(format!("unexpected reply {other:?}"))),
        }
    }

    /// Creates a regular file.
    pub async fn create(&self, parent: Ino, name: &[u8], perm: u32) -> Result<pb::Attr, ClientError> {
        self.make_node(parent, name, pb::FileKind::Regular, perm).await
    }

    /// Creates a directory.
    pub async fn mkdir(&self, parent: Ino, name: &[u8], perm: u32) -> Result<pb::Attr, ClientError> {
        self.make_node(parent, name, pb::FileKind::Directory, perm).await
    }

    /// Removes a non-directory.
    pub async fn unlink(&self, parent: Ino, name: &[u8]) -> Result<(), ClientError> {
        self.call(Op::Unlink(pb::Unlink {
            parent: parent.0,
            name: name.to_vec(),
            keep_for_session: None,
        }))
        .await
        .map(|_| ())
    }

    /// Renames with renameat2 `flags`.
    pub async fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
        flags: u32,
    ) -> Result<(), ClientError> {
        self.call(Op::Rename(pb::Rename {
            parent: parent.0,
            name: name.to_vec(),
            new_parent: new_parent.0,
            new_name: new_name.to_vec(),
            flags,
            keep_for_session: None,
        }))
        .await
        .map(|_| ())
    }

    /// Every entry of directory `ino`, page by page.
    pub async fn readdir_all(&self, ino: Ino) -> Result<Vec<pb::DirEntry>, ClientError> {
        let mut out: Vec<pb::DirEntry> = Vec::new();
        loop {
            let after = out.last().map(|e| e.cookie).unwrap_or(0);
            let r = self
                .call(Op::Readdir(pb::ReadDir {
                    ino: ino.0,
                    after,
                    limit: 1024,
                    plus: false,
                }))
                .await?;
            let R::Dir(page) = r else {
                return Err(ClientError::Refused("unexpected readdir reply".into()));
            };
            out.extend(page.entries);
            if !page.more {
                return Ok(out);
            }
        }
    }
}

/// A new request id: the time in milliseconds (6 bytes, big-endian), then 10
/// random bytes. The meta servers keep each request's outcome under its id
/// for a few minutes; ids that start with the time land at one end of that
/// index and are forgotten from the other, where random ids scattered them
/// over all of it, so that every create read and rewrote a page of a large
/// index that the cache could not hold (at four million inodes the create
/// rate had halved). 80 random bits still make an id unguessable.
fn new_request_id() -> Vec<u8> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut id = nimbus_common::BlockId::random().0;
    id[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    id.to_vec()
}
