//! The reads: served from the applied state after a linearizability check.

use super::ops::{directory, xattr_access};
use super::perm::{self, Caller, R, X};
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
}

/// Largest readdir page.
pub const READDIR_MAX: usize = 4096;

/// The attributes of `name` in `parent`.
pub fn lookup(txn: &Txn, caller: &Caller, parent: Ino, name: &[u8]) -> Result<Attr, NsError> {
    validate_name(name)?;
    let dir = directory(txn, parent)?;
    perm::check(&dir, caller, X)?;
    let ino = match name {
        b"." => parent,
        b".." => dir.parent,
        _ => txn.dentry(parent, name)?.ok_or(Errno::ENOENT)?.ino,
    };
    Ok(txn.existing(ino)?.attr())
}

/// The attributes of `ino`.
pub fn getattr(txn: &Txn, ino: Ino) -> Result<Attr, NsError> {
    Ok(txn.existing(ino)?.attr())
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
    perm::check(&dir, caller, R)?;
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
    let searchable = perm::check(&directory(txn, ino)?, caller, X).is_ok();
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
pub fn statfs(txn: &Txn) -> Result<FsStats, NsError> {
    let sb = txn.superblock()?;
    Ok(FsStats {
        inodes: sb.inodes,
        bytes: sb.bytes,
    })
}

/// The value of extended attribute `name` of `ino`.
pub fn getxattr(txn: &Txn, caller: &Caller, ino: Ino, name: &[u8]) -> Result<Vec<u8>, NsError> {
    let inode = txn.existing(ino)?;
    xattr_access(&inode, caller, name, false)?;
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
