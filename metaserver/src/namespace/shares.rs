//! Shares: an owner lets a user or a group into one of their folders (or
//! files), read-only or read-write, whatever its mode bits say.
//!
//! A share adds rights; it never takes any away. It covers the shared inode
//! and everything under it, found by walking up from an inode through its
//! parents (a file's parent is its newest name's folder, or none once that
//! name is removed). The grantee may also pass through the directories above
//! the shared one — only towards it: they can reach `/home/alice/projects`
//! without seeing what else `/home/alice` holds. Rights are looked up in the
//! state at every check, so a revocation takes effect with the next
//! operation.
//!
//! | key                 | value     |
//! |---------------------|-----------|
//! | `h` ino grantee     | [`Share`] |
//! | `H` grantee ino     | ()        |

use super::caller::{Caller, R, W, X};
use super::tables::{decode, encode, Txn};
use super::{accounts, FileKind, Inode, NsError, Reply};
use crate::store::StoreError;
use nimbus_common::{Errno, Gid, Ino, Uid};
use serde::{Deserialize, Serialize};

const SHARE: u8 = b'h';
const BY_GRANTEE: u8 = b'H';

/// Deepest directory chain a walk follows before giving up.
const MAX_DEPTH: usize = 4096;

/// Who a share is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Grantee {
    User(Uid),
    Group(Gid),
}

impl Grantee {
    fn key(&self) -> [u8; 5] {
        let (tag, id) = match self {
            Grantee::User(u) => (b'u', u.0),
            Grantee::Group(g) => (b'g', g.0),
        };
        let b = id.to_be_bytes();
        [tag, b[0], b[1], b[2], b[3]]
    }
}

/// One share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub ino: Ino,
    pub grantee: Grantee,
    pub rw: bool,
    /// Who shared it.
    pub owner: Uid,
}

fn share_key(ino: Ino, g: Grantee) -> Vec<u8> {
    let mut k = vec![SHARE];
    k.extend_from_slice(&ino.0.to_be_bytes());
    k.extend_from_slice(&g.key());
    k
}

fn grantee_key(g: Grantee, ino: Ino) -> Vec<u8> {
    let mut k = vec![BY_GRANTEE];
    k.extend_from_slice(&g.key());
    k.extend_from_slice(&ino.0.to_be_bytes());
    k
}

/// Shares `ino` with `grantee`; the inode's owner or the superuser may.
pub fn add(txn: &mut Txn, caller: &Caller, ino: Ino, grantee: Grantee, rw: bool) -> Result<Reply, NsError> {
    let inode = txn.existing(ino)?;
    if !caller.is_root() && !caller.owns(&inode) {
        return Err(Errno::EPERM.into());
    }
    let exists = match grantee {
        Grantee::User(u) => accounts::user_by_uid(txn, u)?.is_some(),
        Grantee::Group(g) => accounts::group_by_gid(txn, g)?.is_some(),
    };
    if !exists {
        return Err(Errno::ENOENT.into());
    }
    let share = Share {
        ino,
        grantee,
        rw,
        owner: inode.uid,
    };
    txn.put_raw(share_key(ino, grantee), Some(encode(&share)));
    txn.put_raw(grantee_key(grantee, ino), Some(Vec::new()));
    Ok(Reply::Done)
}

/// Ends the share of `ino` with `grantee`; ENOENT if there is none.
pub fn revoke(txn: &mut Txn, caller: &Caller, ino: Ino, grantee: Grantee) -> Result<Reply, NsError> {
    let key = share_key(ino, grantee);
    let Some(v) = txn.raw(&key)? else {
        return Err(Errno::ENOENT.into());
    };
    let share: Share = decode(&key, &v)?;
    if !caller.is_root() && caller.uid != share.owner {
        return Err(Errno::EPERM.into());
    }
    txn.put_raw(key, None);
    txn.put_raw(grantee_key(grantee, ino), None);
    Ok(Reply::Done)
}

/// Every share.
pub fn all(txn: &Txn) -> Result<Vec<Share>, StoreError> {
    txn.scan_prefix(&[SHARE])?
        .into_iter()
        .map(|(k, v)| decode(&k, &v))
        .collect()
}

/// Drops every share by or with `uid` (the account goes).
pub fn forget_user(txn: &mut Txn, uid: Uid) -> Result<(), NsError> {
    for s in all(txn)? {
        if s.owner == uid || s.grantee == Grantee::User(uid) {
            txn.put_raw(share_key(s.ino, s.grantee), None);
            txn.put_raw(grantee_key(s.grantee, s.ino), None);
        }
    }
    Ok(())
}

/// The shared inodes `caller` may use, read-write or not.
fn shares_of(txn: &Txn, caller: &Caller) -> Result<Vec<(Ino, bool)>, StoreError> {
    let mut out = Vec::new();
    let grantees = std::iter::once(Grantee::User(caller.uid)).chain(caller.gids.iter().map(|g| Grantee::Group(*g)));
    for g in grantees {
        let mut prefix = vec![BY_GRANTEE];
        prefix.extend_from_slice(&g.key());
        for (k, _) in txn.scan_prefix(&prefix)? {
            let Some(ino) = k.get(6..14).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
                continue;
            };
            let ino = Ino(u64::from_be_bytes(ino));
            let key = share_key(ino, g);
            if let Some(v) = txn.raw(&key)? {
                let s: Share = decode(&key, &v)?;
                out.push((ino, s.rw));
            }
        }
    }
    Ok(out)
}

/// The rights (R|W|X) shares give `caller` on `inode`.
pub fn granted(txn: &Txn, inode: &Inode, caller: &Caller) -> Result<u16, StoreError> {
    let shares = shares_of(txn, caller)?;
    if shares.is_empty() {
        return Ok(0);
    }
    let executable = inode.kind == FileKind::Directory || inode.perm & 0o111 != 0;
    let mut bits = 0;
    let mut cur = inode.clone();
    for _ in 0..MAX_DEPTH {
        for (ino, rw) in &shares {
            if *ino == cur.ino {
                bits |= R | if *rw { W } else { 0 } | if executable { X } else { 0 };
            }
        }
        if cur.ino == Ino::ROOT || cur.parent == cur.ino {
            break;
        }
        match txn.inode(cur.parent)? {
            Some(p) => cur = p,
            None => break,
        }
    }
    Ok(bits)
}

/// Whether `ino` is a share of `caller`'s or a directory above one.
pub fn on_way_to_share(txn: &Txn, ino: Ino, caller: &Caller) -> Result<bool, StoreError> {
    for (shared, _) in shares_of(txn, caller)? {
        let mut cur = shared;
        for _ in 0..MAX_DEPTH {
            if cur == ino {
                return Ok(true);
            }
            match txn.inode(cur)? {
                Some(i) if i.parent != cur => cur = i.parent,
                _ => break,
            }
        }
    }
    Ok(false)
}
