//! Space and inode quotas per user: usage is counted by the same command
//! that changes it, so that a limit holds exactly however many clients write
//! at once.
//!
//! A user is charged, as owner, one inode per inode (files, directories,
//! symlinks, ...) and the size of each regular file (its logical size: a
//! sparse file counts in full, as on most quota systems that count apparent
//! size). Inodes removed but still open somewhere stay charged until freed.
//!
//! | key       | value     |
//! |-----------|-----------|
//! | `n` uid   | [`Usage`] |

use super::accounts;
use super::tables::{decode, encode, Txn};
use super::{FileKind, Inode, NsError};
use crate::store::StoreError;
use nimbus_common::{Errno, Uid};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const USAGE: u8 = b'n';

/// What one user's files use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

fn usage_key(uid: Uid) -> Vec<u8> {
    let mut k = vec![USAGE];
    k.extend_from_slice(&uid.0.to_be_bytes());
    k
}

/// The recorded usage of `uid`.
pub fn usage(txn: &Txn, uid: Uid) -> Result<Usage, StoreError> {
    let key = usage_key(uid);
    Ok(match txn.raw(&key)? {
        Some(v) => decode(&key, &v)?,
        None => Usage::default(),
    })
}

fn put_usage(txn: &mut Txn, uid: Uid, u: &Usage) {
    txn.put_raw(usage_key(uid), Some(encode(u)));
}

/// Charges the root directory, made by no command, to its owner.
pub fn charge_root(txn: &mut Txn, root: &Inode) {
    put_usage(txn, root.uid, &Usage { bytes: 0, inodes: 1 });
}

/// Changes the usage of `uid` by `bytes` and `inodes`; EDQUOT if either
/// grows past the user's limit (shrinking is always allowed, even when
/// already over a limit that was lowered).
pub fn charge(txn: &mut Txn, uid: Uid, bytes: i128, inodes: i64) -> Result<(), NsError> {
    if bytes == 0 && inodes == 0 {
        return Ok(());
    }
    let mut u = usage(txn, uid)?;
    let new_bytes = (i128::from(u.bytes) + bytes).clamp(0, i128::from(u64::MAX)) as u64;
    let new_inodes = (i128::from(u.inodes) + i128::from(inodes)).clamp(0, i128::from(u64::MAX)) as u64;
    if bytes > 0 || inodes > 0 {
        if let Some(user) = accounts::user_by_uid(txn, uid)? {
            let over_bytes = bytes > 0 && user.quota_bytes > 0 && new_bytes > user.quota_bytes;
            let over_inodes = inodes > 0 && user.quota_inodes > 0 && new_inodes > user.quota_inodes;
            if over_bytes || over_inodes {
                return Err(Errno::EDQUOT.into());
            }
        }
    }
    u.bytes = new_bytes;
    u.inodes = new_inodes;
    put_usage(txn, uid, &u);
    Ok(())
}

/// The bytes an inode is charged.
pub fn bytes_of(inode: &Inode) -> u64 {
    if inode.kind == FileKind::Regular {
        inode.size
    } else {
        0
    }
}

/// Charges a file's size change from `old` to `new` bytes to its owner.
pub fn resize(txn: &mut Txn, inode: &Inode, old: u64, new: u64) -> Result<(), NsError> {
    if inode.kind != FileKind::Regular {
        return Ok(());
    }
    charge(txn, inode.uid, i128::from(new) - i128::from(old), 0)
}

/// Moves an inode's charge from its owner to `to` (chown); EDQUOT if `to`
/// has no room for it.
pub fn transfer(txn: &mut Txn, inode: &Inode, to: Uid) -> Result<(), NsError> {
    if inode.uid == to {
        return Ok(());
    }
    let bytes = i128::from(bytes_of(inode));
    charge(txn, to, bytes, 1)?;
    charge(txn, inode.uid, -bytes, -1)
}

/// One user's usage as recorded and as counted from the namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCheck {
    pub uid: Uid,
    pub recorded: Usage,
    pub actual: Usage,
}

/// Counts every inode's charge and compares it with the recorded usage;
/// with `fix`, records the counts. Returns the users whose figures differ.
///
/// This reads every inode, inside one command so that it sees one state:
/// it holds up the namespace for as long as that takes (about a second per
/// million inodes), which is why it is an administrator's command.
pub fn check(txn: &mut Txn, fix: bool) -> Result<Vec<UsageCheck>, NsError> {
    let mut actual: BTreeMap<Uid, Usage> = BTreeMap::new();
    for (key, value) in txn.scan_prefix(&[super::tables::INODE])? {
        let inode: Inode = decode(&key, &value)?;
        let u = actual.entry(inode.uid).or_default();
        u.inodes += 1;
        u.bytes += bytes_of(&inode);
    }
    let mut recorded: BTreeMap<Uid, Usage> = BTreeMap::new();
    for (key, value) in txn.scan_prefix(&[USAGE])? {
        let Some(uid) = key.get(1..5).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
            continue;
        };
        recorded.insert(Uid(u32::from_be_bytes(uid)), decode(&key, &value)?);
    }
    let uids: std::collections::BTreeSet<Uid> = actual.keys().chain(recorded.keys()).copied().collect();
    let mut out = Vec::new();
    for uid in uids {
        let a = actual.get(&uid).copied().unwrap_or_default();
        let r = recorded.get(&uid).copied().unwrap_or_default();
        if a != r {
            out.push(UsageCheck {
                uid,
                recorded: r,
                actual: a,
            });
            if fix {
                put_usage(txn, uid, &a);
            }
        }
    }
    Ok(out)
}
