//! flock and fcntl locks, held in the meta cluster so that they exclude
//! across every mount of the store.
//!
//! The mount is one lock *session* (a random id). It remembers which
//! (inode, owner) pairs hold locks, so that a close costs a round trip only
//! when it must release one, and renews its session's lease while it holds
//! any. A blocking request (F_SETLKW, flock without LOCK_NB) polls the
//! cluster with a growing pause until the lock is granted.

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

/// This mount's lock session.
pub struct Locks {
    client: Arc<MetaClient>,
    session: u64,
    /// (inode, owner) pairs that may hold a lock.
    held: Mutex<HashSet<(u64, u64)>>,
}

fn guard(m: &Mutex<HashSet<(u64, u64)>>) -> std::sync::MutexGuard<'_, HashSet<(u64, u64)>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Locks {
    /// A new session; its lease is renewed by [`Locks::keep_alive`].
    pub fn new(client: Arc<MetaClient>) -> Locks {
        Locks {
            client,
            session: rand::random(),
            held: Mutex::default(),
        }
    }

    fn request(&self, a: &LockArgs, typ: i32, test: bool) -> Op {
        Op::Lock(pb::Lock {
            ino: a.ino,
            session: self.session,
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
        if a.typ != F_UNLCK {
            // Recorded before asking, so that a close racing the grant still
            // releases it.
            guard(&self.held).insert((a.ino, a.owner));
        }
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
                Err(e) => return Err(e.into()),
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
        let a = LockArgs {
            ino,
            owner,
            start: 0,
            end: i64::MAX as u64,
            typ: F_UNLCK,
            pid: 0,
        };
        let op = self.request(&a, F_UNLCK, false);
        if let Err(e) = self.client.call_as(pb::Caller::default(), op).await {
            // The lease still ends it: other mounts wait at most that long.
            tracing::warn!("inode {ino}: releasing a lock at close failed: {e}");
        }
    }

    /// Renews the session's lease while it holds locks; runs until the
    /// mount ends.
    pub async fn keep_alive(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        loop {
            tick.tick().await;
            if guard(&self.held).is_empty() {
                continue;
            }
            let op = Op::RenewSession(pb::RenewSession { session: self.session });
            if let Err(e) = self.client.call_as(pb::Caller::default(), op).await {
                tracing::warn!("renewing the lock lease failed: {e}");
            }
        }
    }

    /// Releases every lock of the session (unmount).
    pub async fn end(&self) {
        let had = !std::mem::take(&mut *guard(&self.held)).is_empty();
        if !had {
            return;
        }
        let op = Op::EndSession(pb::EndSession { session: self.session });
        if let Err(e) = self.client.call_as(pb::Caller::default(), op).await {
            tracing::warn!("releasing this mount's locks failed (they lapse within 15 s): {e}");
        }
    }
}
