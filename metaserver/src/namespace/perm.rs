//! Who may do what: POSIX mode bits, ownership and the sticky bit.

use super::{Inode, S_ISVTX};
use nimbus_common::{Errno, Gid, Uid};
use serde::{Deserialize, Serialize};

/// Read permission.
pub const R: u16 = 4;
/// Write permission.
pub const W: u16 = 2;
/// Execute (search) permission.
pub const X: u16 = 1;

/// The identity an operation runs as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub uid: Uid,
    /// The primary group first.
    pub gids: Vec<Gid>,
}

impl Caller {
    /// The file-system superuser.
    pub fn root() -> Caller {
        Caller {
            uid: Uid::ROOT,
            gids: vec![Gid(0)],
        }
    }

    /// Whether this is the superuser.
    pub fn is_root(&self) -> bool {
        self.uid == Uid::ROOT
    }

    /// The group new files get, unless the directory is set-group-id.
    pub fn primary_gid(&self) -> Gid {
        self.gids.first().copied().unwrap_or(Gid(self.uid.0))
    }

    /// Whether the caller belongs to `gid`.
    pub fn in_group(&self, gid: Gid) -> bool {
        self.gids.contains(&gid)
    }

    /// Whether the caller owns `inode`.
    pub fn owns(&self, inode: &Inode) -> bool {
        self.uid == inode.uid
    }
}

/// Checks that `caller` has every permission in `mask` (R|W|X) on `inode`.
pub fn check(inode: &Inode, caller: &Caller, mask: u16) -> Result<(), Errno> {
    if caller.is_root() {
        // Root may search any directory, but executes a file only if some
        // execute bit is set.
        if mask & X != 0 && !inode.is_dir() && inode.perm & 0o111 == 0 {
            return Err(Errno::EACCES);
        }
        return Ok(());
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
