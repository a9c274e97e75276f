//! Who may do what: POSIX mode bits, access control lists, ownership, the
//! sticky bit, and the rights a share grants.

use super::acl::{self, Acl};
use super::caller::{Caller, X};
use super::tables::Txn;
use super::{shares, Inode, NsError, S_ISVTX};
use nimbus_common::Errno;

/// Checks `mask` (R|W|X) against the inode's own bits and ACL only.
pub fn check(inode: &Inode, caller: &Caller, mask: u16) -> Result<(), Errno> {
    if caller.is_root() {
        // Root may search any directory, but executes a file only if some
        // execute bit is set.
        if mask & X != 0 && !inode.is_dir() && inode.perm & 0o111 == 0 {
            return Err(Errno::EACCES);
        }
        return Ok(());
    }
    if !caller.owns(inode) {
        // The owner's rights are the mode's owner bits, ACL or not; for
        // everyone else a stored (non-minimal) ACL decides.
        if let Some(acl) = inode.xattrs.get(acl::ACCESS_XATTR).and_then(|v| Acl::parse(v).ok()) {
            return if acl.allows(inode.uid, inode.gid, caller.uid, &caller.gids, mask) {
                Ok(())
            } else {
                Err(Errno::EACCES)
            };
        }
    }
    let bits = if caller.owns(inode) {
        inode.perm >> 6
    } else if caller.in_group(inode.gid) {
        inode.perm >> 3
    } else {
        inode.perm
    } & 7;
    if bits & mask == mask {
        Ok(())
    } else {
        Err(Errno::EACCES)
    }
}

/// Checks `mask` as [`check`] does, then lets a share with the caller make
/// up for what the bits refuse.
pub fn access(txn: &Txn, inode: &Inode, caller: &Caller, mask: u16) -> Result<(), NsError> {
    match check(inode, caller, mask) {
        Ok(()) => Ok(()),
        Err(e) => {
            let granted = shares::granted(txn, inode, caller)?;
            if granted & mask == mask {
                Ok(())
            } else {
                Err(e.into())
            }
        }
    }
}

/// Search permission on directory `dir` to reach its entry `child`: a share
/// lets its grantee pass through the directories above the shared one (to
/// the shared one only, not to their other entries).
pub fn search(txn: &Txn, dir: &Inode, child: Option<nimbus_common::Ino>, caller: &Caller) -> Result<(), NsError> {
    match access(txn, dir, caller, X) {
        Ok(()) => Ok(()),
        Err(e) => match child {
            Some(c) if shares::on_way_to_share(txn, c, caller)? => Ok(()),
            _ => Err(e),
        },
    }
}

/// Checks that `caller` may reach `inode` from the root now: search
/// permission on every directory above it (the newest name's, for a file
/// with several). A mount signed in as one user caches names in the kernel,
/// which never asks us again for the path; checking the path where data
/// is handed out (open, readdir, layouts) makes a revoked share or a
/// tightened folder take effect at once, not when the cache expires.
pub fn reachable(txn: &Txn, inode: &Inode, caller: &Caller) -> Result<(), NsError> {
    if caller.is_root() {
        return Ok(());
    }
    let (mut child, mut parent) = (inode.ino, inode.parent);
    for _ in 0..4096 {
        if child == nimbus_common::Ino::ROOT {
            return Ok(());
        }
        // A directory removed meanwhile: what is still open stays usable.
        let Some(dir) = txn.inode(parent)? else {
            return Ok(());
        };
        search(txn, &dir, Some(child), caller)?;
        (child, parent) = (dir.ino, dir.parent);
    }
    Ok(())
}

/// Owner or root, else EPERM (chmod, explicit utimes).
pub fn owner_or_root(inode: &Inode, caller: &Caller) -> Result<(), Errno> {
    if caller.is_root() || caller.owns(inode) {
        Ok(())
    } else {
        Err(Errno::EPERM)
    }
}

/// In a sticky directory only the owner of an entry, of the directory, or
/// root may remove or rename the entry.
pub fn sticky(dir: &Inode, victim: &Inode, caller: &Caller) -> Result<(), Errno> {
    if dir.perm & S_ISVTX == 0 || caller.is_root() || caller.owns(dir) || caller.owns(victim) {
        Ok(())
    } else {
        Err(Errno::EPERM)
    }
}
