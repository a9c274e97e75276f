//! The mutations: each checks everything that decides its errno before it
//! writes, and reads state back through the transaction after every write so
//! that a directory that is both source and target is updated once, correctly.

use super::acl::{self, Acl};
use super::caller::{Caller, R, W, X};
use super::perm;
use super::tables::Keyring;
use super::*;

/// Creates the root directory if the namespace is new.
pub(super) fn ensure_root(txn: &mut Txn, time: Timestamp) -> Result<(), StoreError> {
    let mut sb = txn.superblock()?;
    if sb.next_ino != 0 {
        return Ok(());
    }
    let root = new_inode(
        Ino::ROOT,
        FileKind::Directory,
        0o755,
        Uid::ROOT,
        Gid(0),
        time,
        Ino::ROOT,
    );
    txn.put_inode(&root);
    quota::charge_root(txn, &root);
    sb.next_ino = Ino::ROOT.0 + 1;
    sb.inodes = 1;
    txn.put_superblock(&sb);
    Ok(())
}

fn new_inode(ino: Ino, kind: FileKind, perm: u16, uid: Uid, gid: Gid, time: Timestamp, parent: Ino) -> Inode {
    let dir = kind == FileKind::Directory;
    Inode {
        ino,
        kind,
        perm: perm & 0o7777,
        uid,
        gid,
        size: 0,
        nlink: if dir { 2 } else { 1 },
        atime: time,
        mtime: time,
        ctime: time,
        rdev: 0,
        target: Vec::new(),
        xattrs: BTreeMap::new(),
        parent,
        entries: 0,
        next_cookie: 1,
        slots: BTreeMap::new(),
        replication: 0,
    }
}

/// Sets the key ring if the one in place is `expect` (leader's service only).
pub(super) fn set_keyring(
    txn: &mut Txn,
    c: &Caller,
    expect: Option<[u8; 16]>,
    ring: &Keyring,
) -> Result<Reply, NsError> {
    if !c.is_root() {
        return Err(Errno::EPERM.into());
    }
    if txn.keyring()?.map(|r| r.master) != expect {
        return Err(Errno::EBUSY.into());
    }
    txn.put_keyring(ring);
    Ok(Reply::Done)
}

/// The directory `ino`: ENOENT if missing, ENOTDIR if not a directory.
pub(super) fn directory(txn: &Txn, ino: Ino) -> Result<Inode, NsError> {
    let dir = txn.existing(ino)?;
    if !dir.is_dir() {
        return Err(Errno::ENOTDIR.into());
    }
    Ok(dir)
}

/// Reads, changes and writes back one inode.
fn update(txn: &mut Txn, ino: Ino, f: impl FnOnce(&mut Inode)) -> Result<Inode, NsError> {
    let mut inode = txn.existing(ino)?;
    f(&mut inode);
    txn.put_inode(&inode);
    Ok(inode)
}

/// Adds `name -> (ino, kind)` to `parent` with a fresh cookie.
fn add_entry(
    txn: &mut Txn,
    time: Timestamp,
    parent: Ino,
    name: &[u8],
    ino: Ino,
    kind: FileKind,
) -> Result<(), NsError> {
    let dir = update(txn, parent, |d| {
        d.entries += 1;
        d.next_cookie += 1;
        if kind == FileKind::Directory {
            d.nlink += 1;
        }
        d.touch_dir(time);
    })?;
    let cookie = dir.next_cookie - 1;
    txn.put_dentry(parent, name, &Dentry { ino, kind, cookie });
    Ok(())
}

/// Removes `name` (dentry `d`) from `parent`.
fn remove_entry(txn: &mut Txn, time: Timestamp, parent: Ino, name: &[u8], d: &Dentry) -> Result<(), NsError> {
    txn.remove_dentry(parent, name, d);
    update(txn, parent, |p| {
        p.entries = p.entries.saturating_sub(1);
        if d.kind == FileKind::Directory {
            p.nlink = p.nlink.saturating_sub(1);
        }
        p.touch_dir(time);
    })?;
    Ok(())
}

/// The `parent` of a file none of whose names is known to be its folder.
pub const NO_PARENT: Ino = Ino(0);

/// Drops one link to `ino` (a name removed from `from`); frees the inode when none remain, unless a
/// session (`keep_for`) still has the file open. Directories lose both their
/// links at once (their own `.` goes with them).
fn drop_link(txn: &mut Txn, time: Timestamp, from: Ino, ino: Ino, keep_for: Option<u64>) -> Result<(), NsError> {
    let mut inode = txn.existing(ino)?;
    inode.nlink = if inode.is_dir() {
        0
    } else {
        inode.nlink.saturating_sub(1)
    };
    inode.ctime = time;
    if !inode.is_dir() && inode.nlink > 0 && inode.parent == from {
        // The name that gave the file its folder is gone and the others
        // are not indexed: no folder, so no share reaches it (never one it
        // has left) until it is renamed or linked again.
        inode.parent = NO_PARENT;
    }
    match keep_for {
        _ if inode.nlink > 0 => txn.put_inode(&inode),
        Some(session) if inode.kind == FileKind::Regular => {
            txn.put_inode(&inode);
            sessions::keep_orphan(txn, time, session, ino);
        }
        _ => blocks::free_inode(txn, inode)?,
    }
    Ok(())
}

pub(super) fn make_node(txn: &mut Txn, time: Timestamp, caller: &Caller, m: &MakeNode) -> Result<Reply, NsError> {
    make_node_numbered(txn, time, caller, m, None)
}

/// [`make_node`] under inode number `given` (reserved by the caller's
/// session, [`super::sessions::take_reserved`]) and born at the time given
/// with it, or a new one born now. The folder changes at `time` either way.
pub(super) fn make_node_numbered(
    txn: &mut Txn,
    time: Timestamp,
    caller: &Caller,
    m: &MakeNode,
    given: Option<(Ino, Timestamp)>,
) -> Result<Reply, NsError> {
    let MakeNode {
        parent,
        ref name,
        kind,
        perm,
        rdev,
        ref target,
        umask,
    } = *m;
    validate_entry_name(name)?;
    if kind == FileKind::Symlink {
        if target.is_empty() {
            return Err(Errno::ENOENT.into());
        }
        if target.len() > PATH_MAX || target.contains(&0) {
            return Err(if target.len() > PATH_MAX {
                Errno::ENAMETOOLONG
            } else {
                Errno::EINVAL
            }
            .into());
        }
    }
    let dir = directory(txn, parent)?;
    // As in Linux: an existing name is EEXIST even where one may not write.
    perm::access(txn, &dir, caller, X)?;
    if txn.dentry(parent, name)?.is_some() {
        return Err(Errno::EEXIST.into());
    }
    perm::access(txn, &dir, caller, W)?;
    let (ino, born) = match given {
        Some((ino, born)) => (count_inode(txn, ino)?, born),
        None => (allocate_ino(txn)?, time),
    };

    let setgid_dir = dir.perm & S_ISGID != 0;
    let gid = if setgid_dir { dir.gid } else { caller.primary_gid() };
    let mut perm = match kind {
        FileKind::Symlink => 0o777,
        _ => perm & 0o7777,
    };
    if kind == FileKind::Directory && setgid_dir {
        perm |= S_ISGID;
    }
    if kind != FileKind::Directory && !caller.is_root() && !caller.in_group(gid) {
        perm &= !S_ISGID;
    }
    // A default ACL on the directory decides the new mode instead of the
    // umask, as on Linux.
    let inherited = match dir.xattrs.get(acl::DEFAULT_XATTR).map(|v| Acl::parse(v)) {
        Some(Ok(default)) if kind != FileKind::Symlink => {
            let (mode, access, default) = Acl::inherit(&default, perm, kind == FileKind::Directory);
            perm = mode;
            Some((access, default))
        }
        _ => {
            if kind != FileKind::Symlink {
                perm &= !(umask.unwrap_or(0) & 0o777);
            }
            None
        }
    };
    let mut inode = new_inode(ino, kind, perm, caller.uid, gid, born, parent);
    if let Some((access, default)) = inherited {
        if let Some(a) = access {
            inode.xattrs.insert(acl::ACCESS_XATTR.to_vec(), a.to_bytes());
        }
        if let Some(d) = default {
            inode.xattrs.insert(acl::DEFAULT_XATTR.to_vec(), d.to_bytes());
        }
    }
    quota::charge(txn, caller.uid, 0, 1)?;
    inode.replication = dir.replication;
    if matches!(kind, FileKind::CharDevice | FileKind::BlockDevice) {
        inode.rdev = rdev;
    }
    if kind == FileKind::Symlink {
        inode.target = target.to_vec();
        inode.size = target.len() as u64;
    }
    txn.put_inode(&inode);
    add_entry(txn, time, parent, name, ino, kind)?;
    Ok(Reply::Attr(inode.attr()))
}

pub(super) fn unlink(
    txn: &mut Txn,
    time: Timestamp,
    caller: &Caller,
    parent: Ino,
    name: &[u8],
    keep_for: Option<u64>,
) -> Result<Reply, NsError> {
    validate_name(name)?;
    if name == b"." || name == b".." {
        return Err(Errno::EISDIR.into());
    }
    let dir = directory(txn, parent)?;
    perm::access(txn, &dir, caller, W | X)?;
    let d = txn.dentry(parent, name)?.ok_or(Errno::ENOENT)?;
    if d.kind == FileKind::Directory {
        return Err(Errno::EISDIR.into());
    }
    let victim = txn.existing(d.ino)?;
    perm::sticky(&dir, &victim, caller)?;
    remove_entry(txn, time, parent, name, &d)?;
    drop_link(txn, time, parent, d.ino, keep_for)?;
    Ok(Reply::Done)
}

pub(super) fn rmdir(
    txn: &mut Txn,
    time: Timestamp,
    caller: &Caller,
    parent: Ino,
    name: &[u8],
) -> Result<Reply, NsError> {
    validate_name(name)?;
    if name == b"." {
        return Err(Errno::EINVAL.into());
    }
    if name == b".." {
        return Err(Errno::ENOTEMPTY.into());
    }
    let dir = directory(txn, parent)?;
    perm::access(txn, &dir, caller, W | X)?;
    let d = txn.dentry(parent, name)?.ok_or(Errno::ENOENT)?;
    if d.kind != FileKind::Directory {
        return Err(Errno::ENOTDIR.into());
    }
    let victim = txn.existing(d.ino)?;
    // Linux decides "may I delete this" before "is it empty".
    perm::sticky(&dir, &victim, caller)?;
    if victim.entries > 0 {
        return Err(Errno::ENOTEMPTY.into());
    }
    remove_entry(txn, time, parent, name, &d)?;
    drop_link(txn, time, parent, d.ino, None)?;
    Ok(Reply::Done)
}

/// Whether `ancestor` is `ino` or one of the directories above it.
fn is_ancestor(txn: &Txn, ancestor: Ino, mut ino: Ino) -> Result<bool, NsError> {
    // Directories form a tree through `parent`; the bound only guards a
    // corrupt store against an endless walk.
    for _ in 0..1_000_000 {
        if ino == ancestor {
            return Ok(true);
        }
        if ino == Ino::ROOT {
            return Ok(false);
        }
        ino = txn.existing(ino)?.parent;
    }
    Err(Errno::ELOOP.into())
}

pub(super) fn rename(txn: &mut Txn, time: Timestamp, caller: &Caller, r: &Rename) -> Result<Reply, NsError> {
    let Rename {
        parent,
        ref name,
        new_parent,
        ref new_name,
        flags,
        keep_for,
    } = *r;
    if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0 || flags == RENAME_NOREPLACE | RENAME_EXCHANGE {
        return Err(Errno::EINVAL.into());
    }
    validate_name(name)?;
    validate_name(new_name)?;
    if name == b"." || name == b".." || new_name == b"." || new_name == b".." {
        return Err(Errno::EBUSY.into());
    }
    let src_dir = directory(txn, parent)?;
    let dst_dir = directory(txn, new_parent)?;
    perm::access(txn, &src_dir, caller, W | X)?;
    perm::access(txn, &dst_dir, caller, W | X)?;
    let src = txn.dentry(parent, name)?.ok_or(Errno::ENOENT)?;
    let dst = txn.dentry(new_parent, new_name)?;
    let src_inode = txn.existing(src.ino)?;
    perm::sticky(&src_dir, &src_inode, caller)?;

    if src.kind == FileKind::Directory && is_ancestor(txn, src.ino, new_parent)? {
        return Err(Errno::EINVAL.into());
    }
    if dst.is_some() && flags & RENAME_NOREPLACE != 0 {
        return Err(Errno::EEXIST.into());
    }
    if let Some(dst) = &dst {
        if dst.ino == src.ino {
            // Two names of one inode: POSIX says rename does nothing.
            return Ok(Reply::Done);
        }
        let dst_inode = txn.existing(dst.ino)?;
        perm::sticky(&dst_dir, &dst_inode, caller)?;
    }
    // Moving a directory to another parent rewrites its "..".
    if src.kind == FileKind::Directory && parent != new_parent {
        perm::access(txn, &src_inode, caller, W)?;
    }

    if flags & RENAME_EXCHANGE != 0 {
        let dst = dst.ok_or(Errno::ENOENT)?;
        if dst.kind == FileKind::Directory && is_ancestor(txn, dst.ino, parent)? {
            return Err(Errno::EINVAL.into());
        }
        if dst.kind == FileKind::Directory && parent != new_parent {
            perm::access(txn, &txn.existing(dst.ino)?, caller, W)?;
        }
        return exchange(txn, time, (parent, name, &src), (new_parent, new_name, &dst));
    }

    if let Some(dst) = &dst {
        match (src.kind == FileKind::Directory, dst.kind == FileKind::Directory) {
            (true, false) => return Err(Errno::ENOTDIR.into()),
            (false, true) => return Err(Errno::EISDIR.into()),
            (true, true) if txn.existing(dst.ino)?.entries > 0 => return Err(Errno::ENOTEMPTY.into()),
            _ => {}
        }
        remove_entry(txn, time, new_parent, new_name, dst)?;
        drop_link(txn, time, new_parent, dst.ino, keep_for)?;
    }
    remove_entry(txn, time, parent, name, &src)?;
    add_entry(txn, time, new_parent, new_name, src.ino, src.kind)?;
    update(txn, src.ino, |i| {
        i.ctime = time;
        // A file's parent is only its newest name's, which is all shares
        // need to find what holds it.
        i.parent = new_parent;
    })?;
    Ok(Reply::Done)
}

/// Renames an entry as the superuser (an account's home when it goes).
pub(super) fn rename_as_root(
    txn: &mut Txn,
    time: Timestamp,
    parent: Ino,
    name: &[u8],
    new_name: &[u8],
    flags: u32,
) -> Result<Reply, NsError> {
    let r = Rename {
        parent,
        name: name.to_vec(),
        new_parent: parent,
        new_name: new_name.to_vec(),
        flags,
        keep_for: None,
    };
    rename(txn, time, &Caller::root(), &r)
}

/// Makes directory `name` in `parent` for `uid`, without permission checks
/// (home folders).
pub(super) fn make_dir_for(
    txn: &mut Txn,
    time: Timestamp,
    parent: Ino,
    name: &[u8],
    perm: u16,
    uid: Uid,
    gid: Gid,
) -> Result<Inode, NsError> {
    validate_entry_name(name)?;
    directory(txn, parent)?;
    if txn.dentry(parent, name)?.is_some() {
        return Err(Errno::EEXIST.into());
    }
    let ino = allocate_ino(txn)?;
    let inode = new_inode(ino, FileKind::Directory, perm, uid, gid, time, parent);
    quota::charge(txn, uid, 0, 1)?;
    txn.put_inode(&inode);
    add_entry(txn, time, parent, name, ino, FileKind::Directory)?;
    Ok(inode)
}

/// Counts reserved `ino` as used; it must not exist yet.
fn count_inode(txn: &mut Txn, ino: Ino) -> Result<Ino, NsError> {
    if txn.inode(ino)?.is_some() {
        return Err(Errno::EEXIST.into());
    }
    let mut sb = txn.superblock()?;
    sb.inodes += 1;
    txn.put_superblock(&sb);
    Ok(ino)
}

fn allocate_ino(txn: &mut Txn) -> Result<Ino, NsError> {
    let mut sb = txn.superblock()?;
    let ino = Ino(sb.next_ino);
    sb.next_ino += 1;
    sb.inodes += 1;
    txn.put_superblock(&sb);
    Ok(ino)
}

/// RENAME_EXCHANGE: both entries keep their cookies, their inodes swap.
/// One side of an exchange: a directory, a name in it and its entry.
type Side<'a> = (Ino, &'a [u8], &'a Dentry);

fn exchange(txn: &mut Txn, time: Timestamp, from: Side, to: Side) -> Result<Reply, NsError> {
    let ((parent, name, src), (new_parent, new_name, dst)) = (from, to);
    txn.put_dentry(
        parent,
        name,
        &Dentry {
            ino: dst.ino,
            kind: dst.kind,
            cookie: src.cookie,
        },
    );
    txn.put_dentry(
        new_parent,
        new_name,
        &Dentry {
            ino: src.ino,
            kind: src.kind,
            cookie: dst.cookie,
        },
    );
    let (src_dir, dst_dir) = (src.kind == FileKind::Directory, dst.kind == FileKind::Directory);
    // A directory changing parent moves one link ("..") with it.
    let delta = |gains: bool, loses: bool| i64::from(gains) - i64::from(loses);
    let into_new = delta(src_dir, dst_dir);
    update(txn, parent, |p| {
        if parent != new_parent {
            p.nlink = (i64::from(p.nlink) - into_new).max(0) as u32;
        }
        p.touch_dir(time);
    })?;
    update(txn, new_parent, |p| {
        if parent != new_parent {
            p.nlink = (i64::from(p.nlink) + into_new).max(0) as u32;
        }
        p.touch_dir(time);
    })?;
    // Files too: shares and path checks find a file's folder through it.
    update(txn, src.ino, |i| {
        i.ctime = time;
        i.parent = new_parent;
    })?;
    update(txn, dst.ino, |i| {
        i.ctime = time;
        i.parent = parent;
    })?;
    Ok(Reply::Done)
}

pub(super) fn link(
    txn: &mut Txn,
    time: Timestamp,
    caller: &Caller,
    ino: Ino,
    new_parent: Ino,
    new_name: &[u8],
) -> Result<Reply, NsError> {
    validate_entry_name(new_name)?;
    let inode = txn.existing(ino)?;
    if inode.is_dir() {
        return Err(Errno::EPERM.into());
    }
    let dir = directory(txn, new_parent)?;
    perm::access(txn, &dir, caller, X)?;
    if txn.dentry(new_parent, new_name)?.is_some() {
        return Err(Errno::EEXIST.into());
    }
    perm::access(txn, &dir, caller, W)?;
    if inode.nlink >= LINK_MAX {
        return Err(Errno::EMLINK.into());
    }
    let inode = update(txn, ino, |i| {
        i.nlink += 1;
        i.ctime = time;
        // The newest name's folder is the file's folder for shares.
        i.parent = new_parent;
    })?;
    add_entry(txn, time, new_parent, new_name, ino, inode.kind)?;
    Ok(Reply::Attr(inode.attr()))
}

pub(super) fn setattr(
    txn: &mut Txn,
    time: Timestamp,
    caller: &Caller,
    ino: Ino,
    ch: &AttrChanges,
) -> Result<Reply, NsError> {
    let mut inode = txn.existing(ino)?;
    let old_size = inode.size;

    if let Some(size) = ch.size {
        match inode.kind {
            FileKind::Directory => return Err(Errno::EISDIR.into()),
            FileKind::Regular => {}
            _ => return Err(Errno::EINVAL.into()),
        }
        if size > SIZE_MAX {
            return Err(Errno::EFBIG.into());
        }
        if !ch.through_writer {
            perm::access(txn, &inode, caller, W)?;
        }
    }
    if let Some(uid) = ch.uid {
        // Only root gives a file away; "chown to myself" is a no-op.
        if !caller.is_root() && (uid != inode.uid || !caller.owns(&inode)) {
            return Err(Errno::EPERM.into());
        }
    }
    if let Some(gid) = ch.gid {
        if !caller.is_root() && (!caller.owns(&inode) || (!caller.in_group(gid) && gid != inode.gid)) {
            return Err(Errno::EPERM.into());
        }
    }
    if ch.perm.is_some() {
        perm::owner_or_root(&inode, caller)?;
    }
    for t in [ch.atime, ch.mtime].into_iter().flatten() {
        match t {
            TimeSet::At(_) => perm::owner_or_root(&inode, caller)?,
            TimeSet::Now => {
                if !caller.is_root() && !caller.owns(&inode) {
                    perm::access(txn, &inode, caller, W)?;
                }
            }
        }
    }

    if let Some(mut p) = ch.perm {
        p &= 0o7777;
        // A non-member may not make a file set-group-id to a group it is not in.
        // Linux drops set-group-id on chmod by a non-member, whatever the type.
        let gid = ch.gid.unwrap_or(inode.gid);
        if !caller.is_root() && !caller.in_group(gid) {
            p &= !S_ISGID;
        }
        inode.perm = p;
        // chmod rewrites the ACL's owner, group class (its mask) and other
        // entries, so that the mode and the ACL keep agreeing.
        if let Some(acl) = inode.xattrs.get(acl::ACCESS_XATTR).and_then(|v| Acl::parse(v).ok()) {
            inode
                .xattrs
                .insert(acl::ACCESS_XATTR.to_vec(), acl.with_mode(p).to_bytes());
        }
    }
    if let Some(uid) = ch.uid {
        quota::transfer(txn, &inode, uid)?;
        inode.uid = uid;
    }
    if let Some(gid) = ch.gid {
        inode.gid = gid;
    }
    if (ch.uid.is_some() || ch.gid.is_some()) && !inode.is_dir() {
        // As in Linux, any chown of a non-directory, even by root, drops
        // set-user-id (and set-group-id of a group-executable file): handing
        // a set-id program to someone must not hand over privileges.
        inode.perm &= !S_ISUID;
        if inode.perm & 0o010 != 0 {
            inode.perm &= !S_ISGID;
        }
    }
    if let Some(size) = ch.size {
        // As for a write (blocks::commit_write): a truncate by someone
        // other than the owner drops set-id bits.
        if !caller.is_root() && !caller.owns(&inode) {
            inode.perm &= !S_ISUID;
            if inode.perm & 0o010 != 0 {
                inode.perm &= !S_ISGID;
            }
        }
        quota::resize(txn, &inode, old_size, size)?;
        if size < old_size {
            blocks::release_beyond(txn, &mut inode, size)?;
        }
        inode.size = size;
        inode.mtime = time;
        let mut sb = txn.superblock()?;
        sb.bytes = sb.bytes.saturating_sub(old_size).saturating_add(size);
        txn.put_superblock(&sb);
    }
    let resolve = |t: TimeSet| match t {
        TimeSet::At(at) => at,
        TimeSet::Now => time,
    };
    if let Some(t) = ch.atime {
        inode.atime = resolve(t);
    }
    if let Some(t) = ch.mtime {
        inode.mtime = resolve(t);
    }
    inode.ctime = time;
    txn.put_inode(&inode);
    Ok(Reply::Attr(inode.attr()))
}

/// Checks an xattr name and whether `caller` may change it on `inode`.
pub(super) fn xattr_access(txn: &Txn, inode: &Inode, caller: &Caller, name: &[u8], write: bool) -> Result<(), NsError> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        return Err(Errno::ERANGE.into());
    }
    if name.starts_with(b"user.") {
        // Linux allows user attributes only on files and directories.
        if !matches!(inode.kind, FileKind::Regular | FileKind::Directory) {
            return Err(if write { Errno::EPERM } else { Errno::ENODATA }.into());
        }
        perm::access(txn, inode, caller, if write { W } else { R })
    } else if name.starts_with(b"trusted.") {
        if caller.is_root() {
            Ok(())
        } else {
            Err(if write { Errno::EPERM } else { Errno::ENODATA }.into())
        }
    } else if name.starts_with(b"security.") || name.starts_with(b"system.") {
        if write {
            Ok(perm::owner_or_root(inode, caller)?)
        } else {
            Ok(())
        }
    } else {
        Err(Errno::EOPNOTSUPP.into())
    }
}

/// Stores an ACL set through its xattr: validated, in canonical form, with
/// the mode following an access ACL (and none stored when the mode says it
/// all), as Linux file systems do.
fn set_acl(inode: &mut Inode, name: &[u8], value: &[u8]) -> Result<(), NsError> {
    if value.is_empty() {
        // Linux reads an empty value as "no ACL".
        inode.xattrs.remove(name);
        return Ok(());
    }
    let acl = Acl::parse(value)?;
    if name == acl::DEFAULT_XATTR {
        if inode.kind != FileKind::Directory {
            return Err(Errno::EACCES.into());
        }
        inode.xattrs.insert(name.to_vec(), acl.to_bytes());
        return Ok(());
    }
    inode.perm = (inode.perm & !0o777) | acl.mode();
    if acl.is_minimal() {
        inode.xattrs.remove(name);
    } else {
        inode.xattrs.insert(name.to_vec(), acl.to_bytes());
    }
    Ok(())
}

pub(super) fn setxattr(txn: &mut Txn, time: Timestamp, caller: &Caller, x: &SetXattr) -> Result<Reply, NsError> {
    let SetXattr {
        ino,
        ref name,
        ref value,
        flags,
    } = *x;
    if flags & !(XATTR_CREATE | XATTR_REPLACE) != 0 || flags == XATTR_CREATE | XATTR_REPLACE {
        return Err(Errno::EINVAL.into());
    }
    if value.len() > XATTR_VALUE_MAX {
        return Err(Errno::E2BIG.into());
    }
    let mut inode = txn.existing(ino)?;
    xattr_access(txn, &inode, caller, name, true)?;
    let exists = inode.xattrs.contains_key(name);
    if flags & XATTR_CREATE != 0 && exists {
        return Err(Errno::EEXIST.into());
    }
    if flags & XATTR_REPLACE != 0 && !exists {
        return Err(Errno::ENODATA.into());
    }
    if name == acl::ACCESS_XATTR || name == acl::DEFAULT_XATTR {
        set_acl(&mut inode, name, value)?;
    } else {
        inode.xattrs.insert(name.to_vec(), value.to_vec());
    }
    let total: usize = inode.xattrs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > XATTR_TOTAL_MAX {
        return Err(Errno::ENOSPC.into());
    }
    inode.ctime = time;
    txn.put_inode(&inode);
    Ok(Reply::Done)
}

pub(super) fn removexattr(
    txn: &mut Txn,
    time: Timestamp,
    caller: &Caller,
    ino: Ino,
    name: &[u8],
) -> Result<Reply, NsError> {
    let mut inode = txn.existing(ino)?;
    xattr_access(txn, &inode, caller, name, true)?;
    if inode.xattrs.remove(name).is_none() {
        return Err(Errno::ENODATA.into());
    }
    inode.ctime = time;
    txn.put_inode(&inode);
    Ok(Reply::Done)
}
