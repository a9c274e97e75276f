//! The namespace state machine: inodes, directory entries and their POSIX
//! rules, applied deterministically.
//!
//! Every mutation is a [`Command`] applied inside a [`Txn`]; the time it
//! happens and every id it allocates come from the command and the state, never
//! from the replica's clock, so that every replica computes the same state.
//! Every check that decides an errno runs here, in apply, which makes the
//! outcome linearizable.

pub mod accounts;
pub mod acl;
pub mod blocks;
pub mod caller;
mod homes;
mod ops;
pub mod perm;
pub mod quota;
mod read;
pub mod sessions;
pub mod shares;
pub mod signup;
pub mod tables;
#[cfg(test)]
mod tests;

pub use caller::Caller;
pub use read::{
    access, getattr, getattr_with_replication, getxattr, listxattr, lookup, open_layout, readable_layout, readdir,
    readdir_plus, readlink, statfs, DirEntry, FsStats,
};
pub use tables::Txn;

use crate::store::StoreError;
use nimbus_common::encryption::CHUNK_OVERHEAD;
use nimbus_common::{Errno, Gid, Ino, Timestamp, Uid};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tables::{encode, Inline, SealedInline};

/// Longest name of a directory entry, in bytes.
pub const NAME_MAX: usize = 255;
/// Longest symlink target, in bytes.
pub const PATH_MAX: usize = 4096;
/// Longest extended attribute name, in bytes.
pub const XATTR_NAME_MAX: usize = 255;
/// Largest extended attribute value, in bytes.
pub const XATTR_VALUE_MAX: usize = 64 * 1024;
/// Most extended-attribute bytes (names and values) one inode may carry.
pub const XATTR_TOTAL_MAX: usize = 256 * 1024;
/// Most hard links to one inode.
pub const LINK_MAX: u32 = 65_000;
/// Largest file size.
pub const SIZE_MAX: u64 = i64::MAX as u64;
/// Size reported for directories.
pub const DIR_SIZE: u64 = 4096;

/// Set-user-id bit.
pub const S_ISUID: u16 = 0o4000;
/// Set-group-id bit.
pub const S_ISGID: u16 = 0o2000;
/// Sticky bit.
pub const S_ISVTX: u16 = 0o1000;

/// What an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

/// An inode as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    pub ino: Ino,
    pub kind: FileKind,
    /// Permission bits, including set-id and sticky (07777).
    pub perm: u16,
    pub uid: Uid,
    pub gid: Gid,
    pub size: u64,
    pub nlink: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub rdev: u32,
    /// Symlink target.
    pub target: Vec<u8>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Directories: the one directory that holds this one (root: itself).
    pub parent: Ino,
    /// Directories: how many entries it holds, so rmdir needs no scan.
    pub entries: u64,
    /// Directories: the readdir cookie the next entry gets.
    pub next_cookie: u64,
    /// Regular files: the block of each written slot.
    pub slots: BTreeMap<u64, blocks::SlotRef>,
    /// Replicas of each block; inherited from the parent directory; 0 is
    /// the cluster default.
    pub replication: u8,
}

/// The attributes a client sees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    pub ino: Ino,
    pub kind: FileKind,
    pub perm: u16,
    pub uid: Uid,
    pub gid: Gid,
    pub size: u64,
    pub nlink: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub rdev: u32,
}

impl Inode {
    /// The attributes of this inode.
    pub fn attr(&self) -> Attr {
        Attr {
            ino: self.ino,
            kind: self.kind,
            perm: self.perm,
            uid: self.uid,
            gid: self.gid,
            size: if self.kind == FileKind::Directory {
                DIR_SIZE
            } else {
                self.size
            },
            nlink: self.nlink,
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            rdev: self.rdev,
        }
    }

    fn is_dir(&self) -> bool {
        self.kind == FileKind::Directory
    }

    fn touch_dir(&mut self, time: Timestamp) {
        self.mtime = time;
        self.ctime = time;
    }
}

/// A directory entry as stored under (parent, name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dentry {
    pub ino: Ino,
    pub kind: FileKind,
    /// Position in readdir; stable while the entry exists.
    pub cookie: u64,
}

/// File-system-wide counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Super {
    /// The number the next inode gets; 0 until the root exists.
    pub next_ino: u64,
    pub inodes: u64,
    pub bytes: u64,
}

/// A time to set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeSet {
    At(Timestamp),
    Now,
}

/// The attributes a setattr changes; None leaves one as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrChanges {
    pub perm: Option<u16>,
    pub uid: Option<Uid>,
    pub gid: Option<Gid>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    /// Through a descriptor opened for writing (ftruncate, fallocate): write
    /// permission was checked at open, as POSIX wants, not again now.
    pub through_writer: bool,
}

impl AttrChanges {
    /// Only a chown, chgrp or chmod: no size, no times.
    pub fn owner_or_mode_only(&self) -> bool {
        self.size.is_none() && self.atime.is_none() && self.mtime.is_none()
    }
}

/// renameat2 flag: fail with EEXIST rather than replace.
pub const RENAME_NOREPLACE: u32 = 1;
/// renameat2 flag: swap the two entries.
pub const RENAME_EXCHANGE: u32 = 2;
/// setxattr flag: fail with EEXIST if the attribute exists.
pub const XATTR_CREATE: u32 = 1;
/// setxattr flag: fail with ENODATA unless the attribute exists.
pub const XATTR_REPLACE: u32 = 2;

/// A namespace mutation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// create, mknod, mkdir and symlink.
    MakeNode(MakeNode),
    Unlink {
        parent: Ino,
        name: Vec<u8>,
        /// The session (mount) that has the file open: if this was its last
        /// link, the inode stays, unnamed, until that session forgets it.
        keep_for: Option<u64>,
    },
    Rmdir {
        parent: Ino,
        name: Vec<u8>,
    },
    Rename(Rename),
    Link {
        ino: Ino,
        new_parent: Ino,
        new_name: Vec<u8>,
    },
    SetAttr {
        ino: Ino,
        changes: AttrChanges,
    },
    SetXattr(SetXattr),
    RemoveXattr {
        ino: Ino,
        name: Vec<u8>,
    },
    /// Swaps written blocks into a file's slots and sets its size.
    CommitWrite {
        ino: Ino,
        slots: Vec<blocks::SlotWrite>,
        size: u64,
    },
    /// Replicas for blocks written under a directory from now on.
    SetReplication {
        ino: Ino,
        replication: u8,
    },
    /// A data server announces itself (the meta leader, on its heartbeat).
    RegisterServer {
        id: nimbus_common::ServerId,
        addr: String,
        zone: String,
    },
    /// An operator drains or removes a data server.
    SetServerState {
        id: nimbus_common::ServerId,
        state: blocks::ServerState,
    },
    /// A new copy of a block exists on `server`.
    AddReplica {
        block: nimbus_common::BlockId,
        server: nimbus_common::ServerId,
    },
    /// The copy on `server` no longer counts; with `delete`, the server must
    /// delete it.
    RemoveReplica {
        block: nimbus_common::BlockId,
        server: nimbus_common::ServerId,
        delete: bool,
    },
    /// `server` deleted these copies.
    GarbageDone {
        server: nimbus_common::ServerId,
        blocks: Vec<nimbus_common::BlockId>,
    },
    /// Takes, converts, releases or tests an advisory lock.
    Lock {
        ino: Ino,
        request: sessions::LockRequest,
    },
    /// A mount holding locks is still there.
    RenewSession {
        session: u64,
    },
    /// A mount goes away: its locks and removed-but-open files go with it.
    EndSession {
        session: u64,
    },
    /// A removed file kept for `session` was closed there: it can go.
    Forget {
        ino: Ino,
        session: u64,
    },
    /// Ends every session whose lease ran out, and every expired sign-in
    /// (the leader, periodically).
    ExpireSessions,
    /// Users, groups, sign-ins and quotas.
    Account(accounts::AccountOp),
    /// Shares `ino` with a user or group.
    Share {
        ino: Ino,
        grantee: shares::Grantee,
        rw: bool,
    },
    /// Ends a share.
    Unshare {
        ino: Ino,
        grantee: shares::Grantee,
    },
    /// A file's new contents and the attributes set through its open
    /// descriptors, at close or fsync, in one command (new variants go last:
    /// the log keeps the old ones' numbers).
    CommitFile(Box<FileCommit>),
    /// A [`Op::CommitFile`] under encryption at rest: the slots' blocks were
    /// sealed by the client with their block keys, and `inline` is the
    /// small file's contents sealed by the leader (`Keys::seal_inline`).
    CommitSealed(Box<FileCommit>),
    /// Sets the key ring: a new cluster's (`expect` None), or the same data
    /// secret re-wrapped under a new master key (`expect` the fingerprint
    /// of the ring it replaces, so that two rotations never cross).
    SetKeyring {
        expect: Option<[u8; 16]>,
        ring: tables::Keyring,
    },
    /// Hands a mount's session the next `count` inode numbers
    /// (1..=[`sessions::RESERVE_MAX`]): it names files with them before
    /// they exist here, and creates each with its contents in one command
    /// ([`Op::CreateFile`]).
    ReserveInodes {
        session: u64,
        count: u32,
    },
    /// A regular file created under an inode number its session reserved,
    /// with its first contents and attributes, as one command: a small
    /// file written by `cp` or `tar` costs one commit.
    CreateFile(Box<CreateFile>),
}

/// `Op::CreateFile`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateFile {
    pub node: MakeNode,
    pub session: u64,
    /// What follows the create; its `ino` is the reserved number.
    pub commit: FileCommit,
    /// As for [`Op::CommitSealed`].
    pub sealed: bool,
    /// When the mount showed the file created (kept if within
    /// [`BORN_WINDOW_NS`] before the commit).
    pub born: Timestamp,
}

/// How long before its commit a file created with it may say it was born.
pub const BORN_WINDOW_NS: i64 = 10 * 60 * 1_000_000_000;

/// `Op::MakeNode`: create, mknod, mkdir and symlink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MakeNode {
    pub parent: Ino,
    pub name: Vec<u8>,
    pub kind: FileKind,
    pub perm: u16,
    pub rdev: u32,
    pub target: Vec<u8>,
    /// The creator's umask, applied unless a default ACL decides.
    pub umask: Option<u16>,
}

/// `Op::Rename`: rename and renameat2 (`flags`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rename {
    pub parent: Ino,
    pub name: Vec<u8>,
    pub new_parent: Ino,
    pub new_name: Vec<u8>,
    pub flags: u32,
    /// As for Unlink, for a target the rename replaces.
    pub keep_for: Option<u64>,
}

/// `Op::SetXattr`: an extended attribute set, with setxattr's flags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetXattr {
    pub ino: Ino,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    pub flags: u32,
}

/// Account mutations (`Op::Account`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountOp {
    /// The first administrator, uid 0, whose home is the root, when a
    /// cluster starts; nothing if any user exists.
    InitAdmin {
        name: String,
        hash: String,
    },
    AddUser {
        name: String,
        hash: String,
        admin: bool,
        quota_bytes: u64,
        quota_inodes: u64,
    },
    SetPassword {
        uid: Uid,
        hash: String,
    },
    SetDisabled {
        uid: Uid,
        disabled: bool,
    },
    RemoveUser {
        uid: Uid,
    },
    AddGroup {
        name: String,
    },
    SetMember {
        gid: Gid,
        uid: Uid,
        add: bool,
    },
    SetQuota {
        uid: Uid,
        bytes: Option<u64>,
        inodes: Option<u64>,
    },
    SignIn {
        id: [u8; 16],
        uid: Uid,
        expires_ms: u64,
    },
    SignOut {
        id: [u8; 16],
    },
    CheckQuota {
        fix: bool,
    },
    /// Self-service sign-up and password reset (new variants go last).
    Signup(signup::SignupOp),
}

/// What a close or fsync commits: written blocks swapped into slots, or a
/// small file's contents kept inline; the size; then the chmod, chown and
/// utimens made on the open file, as one setattr.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCommit {
    pub ino: Ino,
    pub slots: Vec<blocks::SlotWrite>,
    pub size: u64,
    /// The whole of slot 0 (at most [`blocks::INLINE_MAX`] bytes), kept in
    /// the namespace instead of a block; None leaves slot 0 as it is.
    pub inline: Option<Vec<u8>>,
    pub attrs: Option<AttrChanges>,
}

/// A mutation and who asks for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub caller: Caller,
    pub op: Op,
    /// Names the request across retries, for exactly-once application.
    pub request: Option<RequestId>,
}

/// 16 random bytes a client gives a request and keeps across its retries.
pub type RequestId = [u8; 16];

/// How long an applied request's outcome is kept to answer its retries.
pub const REQUEST_MEMORY_NS: i64 = 10 * 60 * 1_000_000_000;

/// What a successful mutation returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The attributes of the created or changed inode.
    Attr(Attr),
    Done,
    /// A lock test's answer: the first conflicting lock, if any.
    Conflict(Option<sessions::HeldLock>),
    /// The id of a new user or group.
    Id(u32),
    /// What a quota check found.
    Usage(Vec<quota::UsageCheck>),
    /// Inode numbers reserved: `first..first + count`.
    Inodes {
        first: Ino,
        count: u32,
    },
}

/// Why a namespace operation did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    /// The POSIX answer to the caller.
    #[error("{0}")]
    Errno(Errno),
    /// The store failed; fatal for the node, never the caller's fault.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Errno> for NsError {
    fn from(e: Errno) -> NsError {
        NsError::Errno(e)
    }
}

/// Checks a directory-entry name: not empty, no `/` or NUL, at most NAME_MAX.
pub fn validate_name(name: &[u8]) -> Result<(), Errno> {
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// Checks a name that a mutation creates or removes: also not `.` or `..`.
fn validate_entry_name(name: &[u8]) -> Result<(), Errno> {
    validate_name(name)?;
    if name == b"." || name == b".." {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// Applies one batch: creates the root on the first, then every command in
/// order. A command's errno discards only that command's writes.
pub fn apply_batch(
    txn: &mut Txn,
    time: Timestamp,
    commands: &[Command],
) -> Result<Vec<Result<Reply, Errno>>, StoreError> {
    ops::ensure_root(txn, time)?;
    tables::forget_requests_before(txn, Timestamp(time.0.saturating_sub(REQUEST_MEMORY_NS)))?;
    txn.commit_command();
    let mut out = Vec::with_capacity(commands.len());
    for c in commands {
        if let Some(id) = &c.request {
            if let Some(earlier) = txn.request_outcome(id)? {
                // A retry of a request already applied: same answer, no
                // second application.
                out.push(earlier);
                continue;
            }
        }
        let outcome = match apply_command(txn, time, c) {
            Ok(r) => {
                txn.commit_command();
                Ok(r)
            }
            Err(NsError::Errno(e)) => {
                txn.abort_command();
                Err(e)
            }
            Err(NsError::Store(e)) => return Err(e),
        };
        if let Some(id) = &c.request {
            txn.remember_request(id, time, &outcome);
            txn.commit_command();
        }
        out.push(outcome);
    }
    Ok(out)
}

/// The attributes of `ino` if `changes` (a chown, chgrp or chmod) would
/// leave it exactly as it is, ctime aside: `chown root:root` of a root-owned
/// directory, `chmod 755` of a 0755 one, which `tar -x` and `cp -a` send
/// for every directory. The leader answers those from its state without a
/// commit. It runs the same checks as the commit would: None when the
/// change would fail or change anything, and the commit path decides.
pub fn setattr_changes_nothing(
    store: &dyn crate::store::Store,
    caller: &Caller,
    ino: Ino,
    changes: &AttrChanges,
) -> Result<Option<Attr>, StoreError> {
    if !changes.owner_or_mode_only() {
        return Ok(None);
    }
    let mut txn = Txn::new(store);
    let Some(before) = txn.inode(ino)? else {
        return Ok(None);
    };
    // At the inode's own ctime: unchanged, the one write is the inode as it was.
    if ops::setattr(&mut txn, before.ctime, caller, ino, changes).is_err() {
        return Ok(None);
    }
    Ok(match txn.into_writes().as_slice() {
        [(_, Some(written))] if *written == encode(&before) => Some(before.attr()),
        _ => None,
    })
}

/// The attributes `m` would give its new node if committed now, or the
/// error it would meet; nothing is written (`store` is read through a
/// transaction that is dropped). The inode number is not meaningful.
pub fn plan_make_node(
    store: &dyn crate::store::Store,
    time: Timestamp,
    caller: &Caller,
    m: &MakeNode,
) -> Result<Attr, NsError> {
    let mut scratch = Txn::new(store);
    match ops::make_node(&mut scratch, time, caller, m)? {
        Reply::Attr(a) => Ok(a),
        _ => Err(Errno::EIO.into()),
    }
}

/// A file's new contents, then the attributes set on it while open. With
/// `created` (the same command created the file) its creator writes them
/// whatever mode it gave the file.
fn commit_file(
    txn: &mut Txn,
    time: Timestamp,
    c: &Caller,
    f: &FileCommit,
    sealed: bool,
    created: bool,
) -> Result<Reply, NsError> {
    let inline = f.inline.as_ref().map(|d| match sealed {
        false => Inline::Clear(d.clone()),
        true => Inline::Sealed(SealedInline {
            len: (d.len() as u64).saturating_sub(CHUNK_OVERHEAD),
            sealed: d.clone(),
        }),
    });
    let written = blocks::commit_write(
        txn,
        time,
        c,
        blocks::Written {
            ino: f.ino,
            writes: &f.slots,
            size: f.size,
            inline,
            sealed,
            created,
        },
    )?;
    match &f.attrs {
        Some(changes) => ops::setattr(txn, time, c, f.ino, changes),
        None => Ok(written),
    }
}

/// Applies one command: the dispatcher, above every module it calls.
fn apply_command(txn: &mut Txn, time: Timestamp, cmd: &Command) -> Result<Reply, NsError> {
    use ops::*;
    let c = &cmd.caller;
    match &cmd.op {
        Op::MakeNode(m) => make_node(txn, time, c, m),
        Op::Unlink { parent, name, keep_for } => unlink(txn, time, c, *parent, name, *keep_for),
        Op::Rmdir { parent, name } => rmdir(txn, time, c, *parent, name),
        Op::Rename(r) => rename(txn, time, c, r),
        Op::Link {
            ino,
            new_parent,
            new_name,
        } => link(txn, time, c, *ino, *new_parent, new_name),
        Op::SetAttr { ino, changes } => setattr(txn, time, c, *ino, changes),
        Op::SetXattr(x) => setxattr(txn, time, c, x),
        Op::RemoveXattr { ino, name } => removexattr(txn, time, c, *ino, name),
        Op::CommitWrite { ino, slots, size } => blocks::commit_write(
            txn,
            time,
            c,
            blocks::Written {
                ino: *ino,
                writes: slots,
                size: *size,
                inline: None,
                sealed: false,
                created: false,
            },
        ),
        Op::CommitFile(f) => commit_file(txn, time, c, f, false, false),
        Op::CommitSealed(f) => commit_file(txn, time, c, f, true, false),
        Op::ReserveInodes { session, count } => sessions::reserve_inodes(txn, *session, *count),
        Op::CreateFile(f) => {
            if f.node.kind != FileKind::Regular {
                return Err(Errno::EINVAL.into());
            }
            sessions::take_reserved(txn, f.session, f.commit.ino)?;
            // Born when the mount said it was, unless that is not just
            // before this commit.
            let recent = f.born <= time && time.0.saturating_sub(f.born.0) <= BORN_WINDOW_NS;
            let born = if recent { f.born } else { time };
            let created = make_node_numbered(txn, time, c, &f.node, Some((f.commit.ino, born)))?;
            let commit = &f.commit;
            if commit.slots.is_empty() && commit.inline.is_none() && commit.size == 0 {
                // Nothing written: the file keeps the times it was born with.
                return match &commit.attrs {
                    Some(changes) => ops::setattr(txn, time, c, commit.ino, changes),
                    None => Ok(created),
                };
            }
            commit_file(txn, time, c, commit, f.sealed, true)
        }
        Op::SetKeyring { expect, ring } => set_keyring(txn, c, *expect, ring),
        Op::SetReplication { ino, replication } => blocks::set_replication(txn, c, *ino, *replication),
        // The operations below come only from the leader's own services.
        Op::RegisterServer { id, addr, zone } => blocks::register_server(txn, *id, addr, zone),
        Op::SetServerState { id, state } => blocks::set_server_state(txn, *id, *state),
        Op::AddReplica { block, server } => blocks::add_replica(txn, *block, *server),
        Op::RemoveReplica { block, server, delete } => blocks::remove_replica(txn, *block, *server, *delete),
        Op::GarbageDone { server, blocks } => blocks::garbage_done(txn, *server, blocks),
        Op::Lock { ino, request } => sessions::lock(txn, time, *ino, request),
        Op::RenewSession { session } => sessions::renew(txn, time, *session),
        Op::EndSession { session } => {
            // A mount that goes away gives back what it did not use; one
            // that lapses keeps its numbers, and may come back to use them.
            sessions::release_reserved(txn, *session)?;
            sessions::end_session(txn, *session)
        }
        Op::Forget { ino, session } => sessions::forget(txn, *ino, *session),
        Op::ExpireSessions => {
            accounts::expire_sign_ins(txn, time)?;
            signup::expire(txn, time)?;
            sessions::expire(txn, time)
        }
        Op::Account(op) => apply_account(txn, time, c, op),
        Op::Share { ino, grantee, rw } => shares::add(txn, c, *ino, *grantee, *rw),
        Op::Unshare { ino, grantee } => shares::revoke(txn, c, *ino, *grantee),
    }
}

/// Applies one account mutation.
fn apply_account(txn: &mut Txn, time: Timestamp, caller: &Caller, op: &AccountOp) -> Result<Reply, NsError> {
    use accounts::*;
    // A new sign-in changes nobody's identity and a check changes nothing;
    // anything else may (a refused command discards the bump with the rest).
    if !matches!(op, AccountOp::SignIn { .. } | AccountOp::CheckQuota { .. }) {
        let next = generation(txn)?.wrapping_add(1);
        txn.put_raw(GENERATION.to_vec(), Some(next.to_be_bytes().to_vec()));
    }
    match op {
        AccountOp::InitAdmin { name, hash } => {
            if !txn.scan_prefix(&[USER])?.is_empty() {
                return Ok(Reply::Done);
            }
            admin_only(caller)?;
            validate_name(name)?;
            // The superuser's home is the root: a new file system holds
            // nothing until someone puts something there.
            let user = User {
                name: name.clone(),
                uid: Uid::ROOT,
                hash: hash.clone(),
                admin: true,
                disabled: false,
                quota_bytes: 0,
                quota_inodes: 0,
                home: Ino::ROOT,
            };
            put_user(txn, &user);
            Ok(Reply::Id(0))
        }
        AccountOp::AddUser {
            name,
            hash,
            admin,
            quota_bytes,
            quota_inodes,
        } => {
            admin_only(caller)?;
            validate_name(name)?;
            let uid = Uid(next_id(txn)?);
            let user = User {
                name: name.clone(),
                uid,
                hash: hash.clone(),
                admin: *admin,
                disabled: false,
                quota_bytes: *quota_bytes,
                quota_inodes: *quota_inodes,
                home: Ino::ROOT,
            };
            homes::create_user(txn, time, user)
        }
        AccountOp::SetPassword { uid, hash } => {
            if !caller.is_root() && caller.uid != *uid {
                return Err(Errno::EPERM.into());
            }
            let mut user = existing_user(txn, *uid)?;
            user.hash = hash.clone();
            put_user(txn, &user);
            Ok(Reply::Done)
        }
        AccountOp::SetDisabled { uid, disabled } => {
            admin_only(caller)?;
            let mut user = existing_user(txn, *uid)?;
            user.disabled = *disabled;
            put_user(txn, &user);
            if *disabled {
                end_sign_ins_of(txn, *uid)?;
            }
            Ok(Reply::Done)
        }
        AccountOp::RemoveUser { uid } => {
            admin_only(caller)?;
            if *uid == Uid::ROOT {
                // The first administrator owns the root; someone must.
                return Err(Errno::EPERM.into());
            }
            let user = existing_user(txn, *uid)?;
            end_sign_ins_of(txn, *uid)?;
            for gid in groups_of(txn, *uid)? {
                set_member(txn, gid, *uid, false);
            }
            shares::forget_user(txn, *uid)?;
            signup::forget_user(txn, *uid)?;
            txn.put_raw(key(USER, &[&uid.0.to_be_bytes()]), None);
            txn.put_raw(key(USER_NAME, &[user.name.as_bytes()]), None);
            // The home and its files stay.
            homes::set_aside(txn, time, &user)?;
            Ok(Reply::Done)
        }
        AccountOp::Signup(op) => signup::apply(txn, time, caller, op),
        AccountOp::AddGroup { name } => {
            admin_only(caller)?;
            validate_name(name)?;
            if group_by_name(txn, name)?.is_some() {
                return Err(Errno::EEXIST.into());
            }
            let gid = Gid(next_id(txn)?);
            let g = Group {
                name: name.clone(),
                gid,
            };
            txn.put_raw(key(GROUP, &[&gid.0.to_be_bytes()]), Some(encode(&g)));
            txn.put_raw(key(GROUP_NAME, &[name.as_bytes()]), Some(gid.0.to_be_bytes().to_vec()));
            Ok(Reply::Id(gid.0))
        }
        AccountOp::SetMember { gid, uid, add } => {
            admin_only(caller)?;
            existing_user(txn, *uid)?;
            group_by_gid(txn, *gid)?.ok_or(Errno::ENOENT)?;
            set_member(txn, *gid, *uid, *add);
            Ok(Reply::Done)
        }
        AccountOp::SetQuota { uid, bytes, inodes } => {
            admin_only(caller)?;
            let mut user = existing_user(txn, *uid)?;
            if let Some(b) = bytes {
                user.quota_bytes = *b;
            }
            if let Some(i) = inodes {
                user.quota_inodes = *i;
            }
            put_user(txn, &user);
            Ok(Reply::Done)
        }
        AccountOp::SignIn { id, uid, expires_ms } => {
            let user = existing_user(txn, *uid)?;
            if user.disabled {
                return Err(Errno::EACCES.into());
            }
            let s = SignIn {
                uid: *uid,
                expires_ms: *expires_ms,
            };
            txn.put_raw(key(SIGN_IN, &[id]), Some(encode(&s)));
            Ok(Reply::Done)
        }
        AccountOp::SignOut { id } => {
            let k = key(SIGN_IN, &[id]);
            match get::<SignIn>(txn, &k)? {
                Some(s) if s.uid == caller.uid || caller.is_root() => {
                    txn.put_raw(k, None);
                    Ok(Reply::Done)
                }
                Some(_) => Err(Errno::EPERM.into()),
                None => Ok(Reply::Done),
            }
        }
        AccountOp::CheckQuota { fix } => {
            admin_only(caller)?;
            Ok(Reply::Usage(quota::check(txn, *fix)?))
        }
    }
}
