//! The reads: served from the applied state after a linearizability check.

use super::caller::{Caller, R, W, X};
use super::ops::{directory, xattr_access};
use super::perm;
use super::tables::{cookie_key, cookie_of, cookie_prefix, decode, IndexEntry};
use super::*;
use crate::store::Tree;

/// One entry of a readdir page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: Ino,
    pub kind: FileKind,
    pub cookie: u64,
}

/// File-system-wide usage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsStats {
    pub inodes: u64,
    pub bytes: u64,
    /// The caller's quota (0: none) and usage.
    pub quota_bytes: u64,
    pub used_bytes: u64,
    pub quota_inodes: u64,
    pub used_inodes: u64,
}

/// Largest readdir page.
pub const READDIR_MAX: usize = 4096;

/// The attributes of `name` in `parent`.
pub fn lookup(txn: &Txn, caller: &Caller, parent: Ino, name: &[u8]) -> Result<Attr, NsError> {
    validate_name(name)?;
    let dir = directory(txn, parent)?;
    let ino = match name {
        b"." => Some(parent),
        b".." => Some(dir.parent),
        _ => txn.dentry(parent, name)?.map(|d| d.ino),
    };
    // Searching first: a caller who may not search learns nothing, not
    // even whether the name exists.
    perm::search(txn, &dir, ino, caller)?;
    Ok(txn.existing(ino.ok_or(Errno::ENOENT)?)?.attr())
}

/// The attributes of `ino`.
pub fn getattr(txn: &Txn, ino: Ino) -> Result<Attr, NsError> {
    Ok(txn.existing(ino)?.attr())
}

/// The attributes of `ino` and how many replicas its new blocks get (0: the
/// cluster default; a directory passes its setting to what is made in it).
pub fn getattr_with_replication(txn: &Txn, ino: Ino) -> Result<(Attr, u8), NsError> {
    let inode = txn.existing(ino)?;
    Ok((inode.attr(), inode.replication))
}

/// The target of the symlink `ino`.
pub fn readlink(txn: &Txn, ino: Ino) -> Result<Vec<u8>, NsError> {
    let inode = txn.existing(ino)?;
    if inode.kind != FileKind::Symlink {
        return Err(Errno::EINVAL.into());
    }
    Ok(inode.target)
}

/// Up to `limit` entries of directory `ino` whose cookie is above `after`, in
/// cookie order, and whether more remain. A cookie stays with its entry for as
/// long as the entry exists, so a listing interrupted by changes resumes
/// without skipping or repeating entries that were there all along.
pub fn readdir(
    txn: &Txn,
    caller: &Caller,
    ino: Ino,
    after: u64,
    limit: usize,
) -> Result<(Vec<DirEntry>, bool), NsError> {
    let dir = directory(txn, ino)?;
    perm::access(txn, &dir, caller, R)?;
    let limit = limit.clamp(1, READDIR_MAX);
    let start = cookie_key(ino, after.saturating_add(1));
    let rows = txn.store().scan(Tree::State, &cookie_prefix(ino), &start, limit + 1)?;
    let more = rows.len() > limit;
    let mut out = Vec::with_capacity(limit);
    for (key, value) in rows.into_iter().take(limit) {
        let entry: IndexEntry = decode(&key, &value)?;
        let cookie = cookie_of(&key).ok_or_else(|| StoreError::Corrupt {
            key: String::from_utf8_lossy(&key).into_owned(),
            detail: "readdir index key without a cookie".into(),
        })?;
        out.push(DirEntry {
            name: entry.name,
            ino: entry.ino,
            kind: entry.kind,
            cookie,
        });
    }
    Ok((out, more))
}

/// `readdir` with each entry's attributes, as a lookup would give them:
/// only when the caller may also search the directory (else None).
#[allow(clippy::type_complexity)]
pub fn readdir_plus(
    txn: &Txn,
    caller: &Caller,
    ino: Ino,
    after: u64,
    limit: usize,
) -> Result<(Vec<(DirEntry, Option<Attr>)>, bool), NsError> {
    let (entries, more) = readdir(txn, caller, ino, after, limit)?;
    let searchable = perm::access(txn, &directory(txn, ino)?, caller, X).is_ok();
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let attr = match searchable {
            true => txn.inode(e.ino)?.map(|i| i.attr()),
            false => None,
        };
        out.push((e, attr));
    }
    Ok((out, more))
}

/// Usage of the whole namespace.
pub fn statfs(txn: &Txn, caller: &Caller) -> Result<FsStats, NsError> {
    let sb = txn.superblock()?;
    let usage = quota::usage(txn, caller.uid)?;
    let (quota_bytes, quota_inodes) = match accounts::user_by_uid(txn, caller.uid)? {
        Some(u) => (u.quota_bytes, u.quota_inodes),
        None => (0, 0),
    };
    Ok(FsStats {
        inodes: sb.inodes,
        bytes: sb.bytes,
        quota_bytes,
        used_bytes: usage.bytes,
        quota_inodes,
        used_inodes: usage.inodes,
    })
}

/// The attributes of `ino` if `caller` has every right in `mask` (R|W|X)
/// on it; 0 asks only whether it exists.
pub fn access(txn: &Txn, caller: &Caller, ino: Ino, mask: u16) -> Result<Attr, NsError> {
    let inode = txn.existing(ino)?;
    if mask != 0 {
        perm::access(txn, &inode, caller, mask)?;
    }
    Ok(inode.attr())
}

/// The layout of a file the caller may read or write (a writer reads back
/// the parts of slots it rewrites).
#[allow(clippy::type_complexity)]
pub fn readable_layout(txn: &Txn, caller: &Caller, ino: Ino) -> Result<super::blocks::FileLayout, NsError> {
    let inode = txn.existing(ino)?;
    if perm::access(txn, &inode, caller, R).is_err() {
        perm::access(txn, &inode, caller, W)?;
    }
    super::blocks::layout(txn, ino)
}

/// What an open needs: the rights in `mask` checked, the attributes and the
/// layout of a regular file (EISDIR for a directory).
pub fn open_layout(
    txn: &Txn,
    caller: &Caller,
    ino: Ino,
    mask: u16,
) -> Result<(Attr, super::blocks::FileLayout), NsError> {
    let attr = access(txn, caller, ino, mask)?;
    Ok((attr, super::blocks::layout(txn, ino)?))
}

/// The value of extended attribute `name` of `ino`.
pub fn getxattr(txn: &Txn, caller: &Caller, ino: Ino, name: &[u8]) -> Result<Vec<u8>, NsError> {
    let inode = txn.existing(ino)?;
    xattr_access(txn, &inode, caller, name, false)?;
    Ok(inode.xattrs.get(name).cloned().ok_or(Errno::ENODATA)?)
}

/// The names of the extended attributes of `ino` the caller may see.
pub fn listxattr(txn: &Txn, caller: &Caller, ino: Ino) -> Result<Vec<Vec<u8>>, NsError> {
    let inode = txn.existing(ino)?;
    Ok(inode
        .xattrs
        .keys()
        .filter(|k| caller.is_root() || !k.starts_with(b"trusted."))
        .cloned()
        .collect())
}
