//! Who an operation runs as, and the access bits permissions are asked in.

use super::Inode;
use nimbus_common::{Gid, Uid};
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
    /// The file-system superuser: an administrator, never a local root.
    pub superuser: bool,
}

impl Caller {
    /// The file-system superuser.
    pub fn root() -> Caller {
        Caller {
            uid: Uid::ROOT,
            gids: vec![Gid(0)],
            superuser: true,
        }
    }

    /// Whether this is the superuser.
    pub fn is_root(&self) -> bool {
        self.superuser
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
