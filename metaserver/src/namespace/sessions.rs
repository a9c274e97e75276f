//! What a mount holds in the cluster: advisory byte-range locks (fcntl and
//! flock), and files removed while it had them open.
//!
//! Both live in the replicated state so that every workstation sees one lock
//! table and a new leader keeps them. Each mount is a *session* (a random
//! id). A lock belongs to a session and to the kernel's lock owner within
//! it; a removed-but-open file ("orphan") keeps its inode and blocks, with
//! no name, until its session forgets it at the last close. Sessions hold a
//! lease: a mount renews it while it holds anything, and the locks of a
//! session silent for [`LEASE_NS`] stop counting, so a crashed workstation
//! cannot block everybody else for ever; the leader then ends it
//! ([`expire`]), freeing its orphans. Expiry is judged by the command's own
//! time, so every replica agrees.
//!
//! | key                   | value                       |
//! |-----------------------|-----------------------------|
//! | `l` ino               | `Vec<HeldLock>`             |
//! | `k` session           | [`Timestamp`] of last renewal |
//! | `K` session ino       | () — the session holds locks on ino |
//! | `o` session ino       | () — the session keeps removed file ino |
//!
//! flock and fcntl locks share one table: the kernel names their owners
//! differently (open file vs process), so each behaves as its kind should
//! among its own kind; unlike Linux's local file systems, an flock and a
//! conflicting fcntl lock on the same file exclude each other, as on BSD.

use super::tables::{decode, encode, Txn};
use super::{NsError, Reply};
use crate::store::StoreError;
use nimbus_common::{Errno, Ino, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How long a session's locks outlive its last renewal.
pub const LEASE_NS: i64 = 15 * 1_000_000_000;

const LOCKS: u8 = b'l';
const SESSION: u8 = b'k';
const SESSION_INODE: u8 = b'K';
const ORPHAN: u8 = b'o';
const RESERVED: u8 = b'R';

/// Most inode numbers one [`reserve_inodes`] hands out.
pub const RESERVE_MAX: u32 = 1024;

/// Who holds a lock: a mount and the kernel's lock owner in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOwner {
    /// Random per mount.
    pub session: u64,
    /// The kernel's owner (open file for flock, process for fcntl).
    pub owner: u64,
}

/// What a lock request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    Read,
    Write,
    Unlock,
}

/// A granted lock on the inclusive byte range `start..=end`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldLock {
    pub owner: LockOwner,
    pub write: bool,
    pub start: u64,
    pub end: u64,
    /// The holder's process id on its own machine, for F_GETLK.
    pub pid: u32,
}

/// A lock, unlock or test request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequest {
    pub owner: LockOwner,
    pub kind: LockKind,
    pub start: u64,
    pub end: u64,
    pub pid: u32,
    /// F_GETLK: report the first conflicting lock, change nothing.
    pub test: bool,
}

fn locks_key(ino: Ino) -> Vec<u8> {
    [&[LOCKS][..], &ino.0.to_be_bytes()].concat()
}

fn session_key(session: u64) -> Vec<u8> {
    [&[SESSION][..], &session.to_be_bytes()].concat()
}

fn session_inode_prefix(session: u64) -> Vec<u8> {
    [&[SESSION_INODE][..], &session.to_be_bytes()].concat()
}

fn session_inode_key(session: u64, ino: Ino) -> Vec<u8> {
    [session_inode_prefix(session), ino.0.to_be_bytes().to_vec()].concat()
}

fn orphan_prefix(session: u64) -> Vec<u8> {
    [&[ORPHAN][..], &session.to_be_bytes()].concat()
}

fn orphan_key(session: u64, ino: Ino) -> Vec<u8> {
    [orphan_prefix(session), ino.0.to_be_bytes().to_vec()].concat()
}

fn reserved_prefix(session: u64) -> Vec<u8> {
    [&[RESERVED][..], &session.to_be_bytes()].concat()
}

fn reserved_key(session: u64, ino: Ino) -> Vec<u8> {
    [reserved_prefix(session), ino.0.to_be_bytes().to_vec()].concat()
}

/// The inode number at the end of a `K`/`o`/`R` key.
fn ino_of(key: &[u8]) -> Option<Ino> {
    let b: [u8; 8] = key.get(9..17)?.try_into().ok()?;
    Some(Ino(u64::from_be_bytes(b)))
}

fn read<T: serde::de::DeserializeOwned>(txn: &Txn, key: &[u8]) -> Result<Option<T>, StoreError> {
    txn.raw(key)?.map(|b| decode(key, &b)).transpose()
}

/// Whether `session` renewed its lease within [`LEASE_NS`] of `time`.
fn alive(txn: &Txn, session: u64, time: Timestamp, cache: &mut BTreeMap<u64, bool>) -> Result<bool, StoreError> {
    if let Some(a) = cache.get(&session) {
        return Ok(*a);
    }
    let renewed: Option<Timestamp> = read(txn, &session_key(session))?;
    let a = renewed.is_some_and(|t| time.0.saturating_sub(t.0) <= LEASE_NS);
    cache.insert(session, a);
    Ok(a)
}

fn overlaps(l: &HeldLock, start: u64, end: u64) -> bool {
    l.start <= end && start <= l.end
}

/// Applies a lock request on `ino`: EAGAIN if another owner's lock conflicts;
/// for a test, the conflicting lock (or none) and no change.
pub(super) fn lock(txn: &mut Txn, time: Timestamp, ino: Ino, req: &LockRequest) -> Result<Reply, NsError> {
    if req.start > req.end {
        return Err(Errno::EINVAL.into());
    }
    txn.existing(ino)?;
    let key = locks_key(ino);
    let stored: Vec<HeldLock> = read(txn, &key)?.unwrap_or_default();
    // Locks of sessions whose lease ran out no longer count.
    let mut cache = BTreeMap::new();
    let mut held = Vec::with_capacity(stored.len());
    let mut expired = Vec::new();
    for l in stored {
        if l.owner.session == req.owner.session || alive(txn, l.owner.session, time, &mut cache)? {
            held.push(l);
        } else {
            expired.push(l.owner.session);
        }
    }
    let conflict = (req.kind != LockKind::Unlock)
        .then(|| {
            held.iter().find(|l| {
                l.owner != req.owner && overlaps(l, req.start, req.end) && (l.write || req.kind == LockKind::Write)
            })
        })
        .flatten();
    if req.test {
        return Ok(Reply::Conflict(conflict.cloned()));
    }
    if conflict.is_some() {
        return Err(Errno::EAGAIN.into());
    }

    // The owner's own locks over the range are replaced (POSIX: a new lock
    // converts, an unlock splits).
    let mut next = Vec::with_capacity(held.len() + 2);
    for l in held {
        if l.owner != req.owner || !overlaps(&l, req.start, req.end) {
            next.push(l);
            continue;
        }
        if l.start < req.start {
            next.push(HeldLock {
                end: req.start - 1,
                ..l.clone()
            });
        }
        if l.end > req.end {
            next.push(HeldLock {
                start: req.end + 1,
                ..l
            });
        }
    }
    if req.kind != LockKind::Unlock {
        next.push(HeldLock {
            owner: req.owner,
            write: req.kind == LockKind::Write,
            start: req.start,
            end: req.end,
            pid: req.pid,
        });
    }
    next.sort_by_key(|l| (l.owner.session, l.owner.owner, l.start));
    let next = merge_adjacent(next);

    for session in expired {
        txn.put_raw(session_inode_key(session, ino), None);
    }
    let still_holds = next.iter().any(|l| l.owner.session == req.owner.session);
    txn.put_raw(session_inode_key(req.owner.session, ino), still_holds.then(Vec::new));
    txn.put_raw(key, (!next.is_empty()).then(|| encode(&next)));
    txn.put_raw(session_key(req.owner.session), Some(encode(&time)));
    Ok(Reply::Done)
}

/// Joins an owner's touching ranges of the same kind, so that a lock
/// taken byte by byte stays one record. `locks` is sorted by owner, start.
fn merge_adjacent(locks: Vec<HeldLock>) -> Vec<HeldLock> {
    let mut out: Vec<HeldLock> = Vec::with_capacity(locks.len());
    for l in locks {
        if let Some(last) = out.last_mut() {
            if last.owner == l.owner && last.write == l.write && last.end.checked_add(1) == Some(l.start) {
                last.end = l.end;
                continue;
            }
        }
        out.push(l);
    }
    out
}

/// Extends `session`'s lease.
pub(super) fn renew(txn: &mut Txn, time: Timestamp, session: u64) -> Result<Reply, NsError> {
    txn.put_raw(session_key(session), Some(encode(&time)));
    Ok(Reply::Done)
}

/// Keeps the unnamed inode `ino` for `session`, which has it open.
pub(super) fn keep_orphan(txn: &mut Txn, time: Timestamp, session: u64, ino: Ino) {
    txn.put_raw(orphan_key(session, ino), Some(Vec::new()));
    txn.put_raw(session_key(session), Some(encode(&time)));
}

/// `session` closed the removed file `ino`: frees it unless it got a name
/// again meanwhile (a link through another path cannot happen without a
/// name, but an orphan never kept is simply not there).
pub(super) fn forget(txn: &mut Txn, ino: Ino, session: u64) -> Result<Reply, NsError> {
    let key = orphan_key(session, ino);
    if txn.raw(&key)?.is_none() {
        return Ok(Reply::Done);
    }
    txn.put_raw(key, None);
    free_if_unnamed(txn, ino)?;
    Ok(Reply::Done)
}

fn free_if_unnamed(txn: &mut Txn, ino: Ino) -> Result<(), NsError> {
    if let Some(inode) = txn.inode(ino)? {
        if inode.nlink == 0 {
            super::blocks::free_inode(txn, inode)?;
        }
    }
    Ok(())
}

/// Drops every lock of `session` and frees its orphans (its mount went
/// away, or its lease ran out).
pub(super) fn end_session(txn: &mut Txn, session: u64) -> Result<Reply, NsError> {
    for (k, _) in txn.scan_prefix(&session_inode_prefix(session))? {
        let Some(ino) = ino_of(&k) else {
            continue;
        };
        let key = locks_key(ino);
        let held: Vec<HeldLock> = read(txn, &key)?.unwrap_or_default();
        let rest: Vec<HeldLock> = held.into_iter().filter(|l| l.owner.session != session).collect();
        txn.put_raw(key, (!rest.is_empty()).then(|| encode(&rest)));
        txn.put_raw(k, None);
    }
    for (k, _) in txn.scan_prefix(&orphan_prefix(session))? {
        if let Some(ino) = ino_of(&k) {
            free_if_unnamed(txn, ino)?;
        }
        txn.put_raw(k, None);
    }
    txn.put_raw(session_key(session), None);
    Ok(Reply::Done)
}

/// Ends every session whose lease ran out before `time`.
pub(super) fn expire(txn: &mut Txn, time: Timestamp) -> Result<Reply, NsError> {
    for (k, v) in txn.scan_prefix(&[SESSION])? {
        let renewed: Timestamp = decode(&k, &v)?;
        let Some(session) = k.get(1..9).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
            continue;
        };
        if time.0.saturating_sub(renewed.0) > LEASE_NS {
            end_session(txn, u64::from_be_bytes(session))?;
        }
    }
    Ok(Reply::Done)
}

/// Hands `session` the next `count` inode numbers (clamped to
/// 1..=[`RESERVE_MAX`]). Each is recorded until the session uses it
/// ([`take_reserved`]) or ends; numbers are never handed out twice.
pub(super) fn reserve_inodes(txn: &mut Txn, session: u64, count: u32) -> Result<Reply, NsError> {
    let count = count.clamp(1, RESERVE_MAX);
    let mut sb = txn.superblock()?;
    let first = sb.next_ino;
    sb.next_ino += u64::from(count);
    txn.put_superblock(&sb);
    for ino in first..first + u64::from(count) {
        txn.put_raw(reserved_key(session, Ino(ino)), Some(Vec::new()));
    }
    Ok(Reply::Inodes {
        first: Ino(first),
        count,
    })
}

/// Uses reserved number `ino` of `session`: ESTALE when the session holds
/// no such reservation (never made, already used, or given back).
pub(super) fn take_reserved(txn: &mut Txn, session: u64, ino: Ino) -> Result<(), NsError> {
    let key = reserved_key(session, ino);
    if txn.raw(&key)?.is_none() {
        return Err(Errno::ESTALE.into());
    }
    txn.put_raw(key, None);
    Ok(())
}

/// Gives back every number `session` reserved and did not use.
pub(super) fn release_reserved(txn: &mut Txn, session: u64) -> Result<(), NsError> {
    for (k, _) in txn.scan_prefix(&reserved_prefix(session))? {
        txn.put_raw(k, None);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(owner: u64, write: bool, start: u64, end: u64) -> HeldLock {
        HeldLock {
            owner: LockOwner { session: 1, owner },
            write,
            start,
            end,
            pid: 0,
        }
    }

    #[test]
    fn touching_ranges_of_one_owner_and_kind_merge() {
        let merged = merge_adjacent(vec![
            l(1, true, 0, 9),
            l(1, true, 10, 19),
            l(1, false, 20, 29),
            l(2, true, 30, 39),
        ]);
        assert_eq!(merged, vec![l(1, true, 0, 19), l(1, false, 20, 29), l(2, true, 30, 39)]);
    }
}
