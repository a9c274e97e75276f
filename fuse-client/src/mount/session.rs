//! What this mount holds in the meta cluster, as one *session* (a random
//! id): flock and fcntl locks, which so exclude across every mount of the
//! store, and files removed while open here, which the cluster keeps,
//! unnamed, until their last close here.
//!
//! The session remembers which (inode, owner) pairs hold locks, so that a
//! close costs a round trip only when it must release one, and renews its
//! lease while it holds anything. A blocking request (F_SETLKW, flock
//! without LOCK_NB) polls the cluster with a growing pause until the lock is
//! granted.

use super::convert::{unexpected, FsResult};
use nimbus_client::MetaClient;
use nimbus_common::Errno;
use nimbus_proto as pb;
use nimbus_proto::ns_reply::Result as R;
use nimbus_proto::ns_request::Op;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Linux lock types, as the kernel sends them.
pub const F_RDLCK: i32 = 0;
pub const F_WRLCK: i32 = 1;
pub const F_UNLCK: i32 = 2;

/// How often the lease is renewed while locks are held; the meta servers
/// let a lease lapse after 15 s, so two renewals may be lost in a row.
const RENEW_EVERY: Duration = Duration::from_secs(4);
/// The pauses between attempts of a blocking lock request.
const FIRST_WAIT: Duration = Duration::from_millis(10);
const LONGEST_WAIT: Duration = Duration::from_millis(250);
/// Inode numbers reserved at a time for files created here.
const RESERVE_BATCH: u32 = 256;

/// A lock request from the kernel.
#[derive(Clone, Copy, Debug)]
pub struct LockArgs {
    pub ino: u64,
    pub owner: u64,
    pub start: u64,
    pub end: u64,
    pub typ: i32,
    pub pid: u32,
}

impl LockArgs {
    /// A request on `ino` from the kernel's `owner`, for bytes `start..=end`.
    pub fn new(ino: u64, owner: u64, start: u64, end: u64, typ: i32, pid: u32) -> LockArgs {
        LockArgs {
            ino,
            owner,
            start,
            end,
            typ,
            pid,
        }
    }
}

/// This mount's session.
pub struct Session {
    client: Arc<MetaClient>,
    /// The session id.
    pub id: u64,
    /// (inode, owner) pairs that may hold a lock.
    held: Mutex<HashSet<(u64, u64)>>,
    /// Removed files the cluster may keep for this mount.
    kept: Mutex<HashSet<u64>>,
    /// Inode numbers reserved for files created here: next..end.
    reserved: Mutex<(u64, u64)>,
    /// Whether the cluster holds reservations of this session (given back
    /// at unmount).
    reserving: std::sync::atomic::AtomicBool,
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    /// A new session; its lease is renewed by [`Session::keep_alive`].
    pub fn new(client: Arc<MetaClient>) -> Session {
        Session {
            client,
            id: rand::random(),
            held: Mutex::default(),
            kept: Mutex::default(),
            reserved: Mutex::default(),
            reserving: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// An inode number for a file created here, from the numbers this
    /// session reserved (a commit per [`RESERVE_BATCH`] files).
    pub async fn next_ino(&self) -> FsResult<u64> {
        loop {
            {
                let mut r = guard(&self.reserved);
                if r.0 < r.1 {
                    r.0 += 1;
                    return Ok(r.0 - 1);
                }
            }
            self.reserving.store(true, std::sync::atomic::Ordering::Release);
            let (first, count) = self.client.reserve_inodes(self.id, RESERVE_BATCH).await?;
            let mut r = guard(&self.reserved);
            // Two creates may refill at once: the later range wins, the
            // cluster frees the other's rest at unmount.
            if r.0 >= r.1 {
                *r = (first.0, first.0 + u64::from(count));
            }
        }
    }

    /// The cluster may keep `ino` for this mount (it was removed while open).
    pub fn keeping(&self, ino: u64) {
        guard(&self.kept).insert(ino);
    }

    /// `ino`, removed while open, was closed for the last time: the cluster
    /// may free it.
    pub async fn forget(&self, ino: u64) {
        guard(&self.kept).remove(&ino);
        let op = Op::Forget(pb::Forget { ino, session: self.id });
        if let Err(e) = self.client.call_as(pb::Caller::default(), op).await {
            tracing::warn!("inode {ino}: freeing a removed file at its last close failed (freed at unmount): {e}");
        }
    }

    fn request(&self, a: &LockArgs, typ: i32, test: bool) -> Op {
        Op::Lock(pb::Lock {
            ino: a.ino,
            session: self.id,
            owner: a.owner,
            kind: typ as u32,
            start: a.start,
            end: a.end,
            pid: a.pid,
            test,
        })
    }

    /// F_SETLK / F_SETLKW / flock: takes, converts or releases a lock;
    /// with `wait`, retries until no other owner's lock is in the way.
    pub async fn set(&self, caller: pb::Caller, a: LockArgs, wait: bool) -> FsResult<()> {
        if ![F_RDLCK, F_WRLCK, F_UNLCK].contains(&a.typ) {
            return Err(Errno::EINVAL.into());
        }
        // Recorded before asking, so that a close racing the grant still
        // releases it; forgotten again if nothing was granted.
        let recorded = a.typ != F_UNLCK && guard(&self.held).insert((a.ino, a.owner));
        let mut pause = FIRST_WAIT;
        loop {
            match self
                .client
                .call_as(caller.clone(), self.request(&a, a.typ, false))
                .await
            {
                Ok(_) => break,
                Err(e) if wait && e.errno() == Errno::EAGAIN => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LONGEST_WAIT);
                }
                Err(e) => {
                    if recorded {
                        guard(&self.held).remove(&(a.ino, a.owner));
                    }
                    return Err(e.into());
                }
            }
        }
        if a.typ == F_UNLCK && a.start == 0 && a.end >= i64::MAX as u64 {
            guard(&self.held).remove(&(a.ino, a.owner));
        }
        Ok(())
    }

    /// F_GETLK: the lock that would stop this one, or `F_UNLCK` if none
    /// would; as (start, end, type, pid).
    pub async fn get(&self, caller: pb::Caller, a: LockArgs) -> FsResult<(u64, u64, i32, u32)> {
        match self.client.call_as(caller, self.request(&a, a.typ, true)).await? {
            R::Conflict(c) if c.held => Ok((c.start, c.end, c.kind as i32, c.pid)),
            R::Conflict(_) => Ok((a.start, a.end, F_UNLCK, 0)),
            other => unexpected("Lock", &other),
        }
    }

    /// Releases whatever `owner` holds on `ino` (a close): POSIX drops a
    /// process's locks when it closes any descriptor of the file, flock
    /// when the last descriptor of the open file goes.
    pub async fn release_owner(&self, ino: u64, owner: u64) {
        if !guard(&self.held).remove(&(ino, owner)) {
            return;
        }
        let a = LockArgs::new(ino, owner, 0, i64::MAX as u64, F_UNLCK, 0);
        let op = self.request(&a, F_UNLCK, false);
        if let Err(e) = self.client.call_as(pb::Caller::default(), op).await {
            // The lease still ends it: other mounts wait at most that long.
            tracing::warn!("inode {ino}: releasing a lock at close failed: {e}");
        }
    }

    /// Renews the session's lease while it holds locks or removed files;
    /// runs until the mount ends.
    pub async fn keep_alive(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        loop {
            tick.tick().await;
            if guard(&self.held).is_empty() && guard(&self.kept).is_empty() {
                continue;
            }
            let op = Op::RenewSession(pb::RenewSession { session: self.id });
            if let Err(e) = self.client.call_as(pb::Caller::default(), op).await {
                tracing::warn!("renewing the lock lease failed: {e}");
            }
        }
    }

    /// Releases every lock of the session and frees the removed files it
    /// kept (unmount).
    pub async fn end(&self) {
        let locks = !std::mem::take(&mut *guard(&self.held)).is_empty();
        let kept = !std::mem::take(&mut *guard(&self.kept)).is_empty();
        let reserved = self.reserving.swap(false, std::sync::atomic::Ordering::AcqRel);
        if !locks && !kept && !reserved {
            return;
        }
        let op = Op::EndSession(pb::EndSession { session: self.id });
        if let Err(e) = self.client.call_as(pb::Caller::default(), op).await {
            tracing::warn!("releasing this mount's locks failed (they lapse within 15 s): {e}");
        }
    }
}
