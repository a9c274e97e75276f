//! Home folders: every user's, under `/home`, made with the account and set
//! aside (renamed, never deleted) when the account goes.

use super::accounts::{put_user, user_by_name, validate_name, User, HOMES};
use super::ops::{make_dir_for, rename_as_root};
use super::tables::Txn;
use super::{Ino, NsError, Reply, RENAME_NOREPLACE};
use nimbus_common::{Errno, Gid, Timestamp, Uid};

/// The directory that holds home folders, made (0755, root's) if missing.
pub(super) fn homes_dir(txn: &mut Txn, time: Timestamp) -> Result<Ino, NsError> {
    match txn.dentry(Ino::ROOT, HOMES)? {
        Some(d) => Ok(d.ino),
        None => Ok(make_dir_for(txn, time, Ino::ROOT, HOMES, 0o755, Uid::ROOT, Gid(0))?.ino),
    }
}

pub(super) fn create_user(txn: &mut Txn, time: Timestamp, mut user: User) -> Result<Reply, NsError> {
    validate_name(&user.name)?;
    if user_by_name(txn, &user.name)?.is_some() {
        return Err(Errno::EEXIST.into());
    }
    let homes = homes_dir(txn, time)?;
    if txn.dentry(homes, user.name.as_bytes())?.is_some() {
        // Someone else's folder by that name: never hand it over.
        return Err(Errno::EEXIST.into());
    }
    // The account first, so that its home is charged against its quota.
    put_user(txn, &user);
    let home = make_dir_for(txn, time, homes, user.name.as_bytes(), 0o700, user.uid, Gid(user.uid.0))?;
    user.home = home.ino;
    put_user(txn, &user);
    Ok(Reply::Id(user.uid.0))
}

/// Renames a removed user's home out of the way (`NAME.removed-UID`), owned
/// by a uid nobody will get again: an administrator decides what becomes of it.
pub(super) fn set_aside(txn: &mut Txn, time: Timestamp, user: &User) -> Result<(), NsError> {
    let homes = homes_dir(txn, time)?;
    if txn.dentry(homes, user.name.as_bytes())?.map(|d| d.ino) == Some(user.home) {
        let kept = format!("{}.removed-{}", user.name, user.uid.0);
        rename_as_root(
            txn,
            time,
            homes,
            user.name.as_bytes(),
            kept.as_bytes(),
            RENAME_NOREPLACE,
        )?;
    }
    Ok(())
}
