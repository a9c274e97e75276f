//! The fuser `Filesystem`: each callback copies its arguments and runs the
//! work (ops.rs): what finishes at once is answered on the request's thread,
//! the rest moves to the tokio runtime and is answered from there, so that
//! no kernel thread waits on a slow RPC. Callbacks not implemented here keep
//! fuser's default, ENOSYS.

use super::convert::{fail, mknod_kind, perm, FsError, FsResult};
use super::ops::{time_spec, Inner, XattrOut};
use super::session::LockArgs;
use fuser::{
    AccessFlags, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use nimbus_common::Errno;
use nimbus_proto as pb;
use std::ffi::OsStr;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};
use tokio::runtime::Handle;

/// Largest write the kernel may send; it caps this at its own limit.
const MAX_WRITE: u32 = 1 << 20;
/// Read-ahead to ask for; the kernel answers with what it offers.
const MAX_READAHEAD: u32 = 1 << 20;
/// Asynchronous requests (read-ahead, background writes) in flight at once.
const MAX_BACKGROUND: u16 = 64;
/// statfs: the block size reported, and the capacity shown until quotas
/// (a later issue) give each user a real one.
const STATFS_BSIZE: u64 = 4096;
const STATFS_TOTAL_BYTES: u64 = 1 << 50;
const STATFS_TOTAL_INODES: u64 = 1 << 40;
/// How long unmount waits for buffered writes to commit.
const DESTROY_FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Nimbus as the kernel sees it.
pub struct NimbusFs {
    /// Acting as local users (--as-local-users): the kernel checks
    /// permissions and ACLs itself.
    trusted: bool,
    inner: Arc<Inner>,
    rt: Handle,
}

impl NimbusFs {
    pub fn new(inner: Arc<Inner>, rt: Handle, trusted: bool) -> NimbusFs {
        NimbusFs { trusted, inner, rt }
    }

    /// Runs `work`, and replies with `done` on success, else with the errno.
    ///
    /// `work` is polled once here, on the kernel request's own thread: what
    /// needs nothing remote (a buffered write, an answer from a cache)
    /// finishes in that poll and is answered at once, without waking a
    /// runtime thread, which cost a buffered 10 KiB write ~200 us of its
    /// ~250. Work that must wait (an RPC, a lock held elsewhere) moves to the
    /// runtime as it is; its first poll only registered a waker that goes
    /// nowhere, so the runtime polls it again straight away.
    fn serve<T, P, F, D>(&self, reply: P, work: F, done: D)
    where
        T: Send + 'static,
        P: Fail + Send + 'static,
        F: Future<Output = FsResult<T>> + Send + 'static,
        D: FnOnce(P, T) + Send + 'static,
    {
        let finish = move |reply: P, r: FsResult<T>| match r {
            Ok(v) => done(reply, v),
            Err(e) => reply.fail(e),
        };
        let mut work = Box::pin(work);
        let first = {
            // Spawns, timers and sockets inside `work` find the runtime.
            let _runtime = self.rt.enter();
            work.as_mut().poll(&mut Context::from_waker(Waker::noop()))
        };
        match first {
            Poll::Ready(r) => finish(reply, r),
            Poll::Pending => {
                self.rt.spawn(async move { finish(reply, work.await) });
            }
        }
    }

    /// `serve` for replies with no payload.
    fn serve_empty<F>(&self, reply: ReplyEmpty, work: F)
    where
        F: Future<Output = FsResult<()>> + Send + 'static,
    {
        self.serve(reply, work, |r, ()| r.ok());
    }

    /// `serve` for replies with a new entry (mknod, mkdir, symlink, link).
    fn serve_entry<F>(&self, reply: ReplyEntry, work: F)
    where
        F: Future<Output = FsResult<fuser::FileAttr>> + Send + 'static,
    {
        let ttl = self.inner.ttl;
        self.serve(reply, work, move |r, a| r.entry(&ttl, &a, Generation(0)));
    }

    fn make_node(&self, req: &Request, reply: ReplyEntry, node: pb::MakeNode) {
        let (inner, caller) = (self.inner.clone(), caller(req));
        self.serve_entry(reply, async move { inner.make_node(caller, node).await });
    }
}

/// Who a request acts for: the calling process's uid, group and
/// supplementary groups.
fn caller(req: &Request) -> pb::Caller {
    let mut gids = vec![req.gid()];
    for g in supplementary_groups(req.pid()) {
        if !gids.contains(&g) {
            gids.push(g);
        }
    }
    pb::Caller { uid: req.uid(), gids }
}

/// The supplementary groups of process `pid`, from /proc (FUSE requests
/// carry only the primary group); none if the process is gone.
fn supplementary_groups(pid: u32) -> Vec<u32> {
    if pid == 0 {
        return Vec::new();
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| g.split_whitespace().filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
}

/// Attributes that say only what an entry is, for readdirplus entries the
/// kernel must look up before trusting.
fn bare_attr(ino: u64, kind: fuser::FileType) -> fuser::FileAttr {
    fuser::FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind,
        perm: 0,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn bytes(name: &OsStr) -> Vec<u8> {
    name.as_bytes().to_vec()
}

/// Replies that can carry an error.
trait Fail {
    fn fail(self, e: FsError);
}

macro_rules! fail_by_error {
    ($($reply:ty),*) => {
        $(impl Fail for $reply {
            fn fail(self, e: FsError) {
                self.error(e.to_fuser())
            }
        })*
    };
}

fail_by_error!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyEmpty,
    ReplyEntry,
    ReplyLock,
    ReplyOpen,
    ReplyStatfs,
    ReplyWrite,
    ReplyXattr
);

impl Filesystem for NimbusFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Each setter answers Err(nearest acceptable value) when asked too
        // much: take that.
        if let Err(max) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(max);
        }
        if let Err(offered) = config.set_max_readahead(MAX_READAHEAD) {
            let _ = config.set_max_readahead(offered);
        }
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_congestion_threshold(MAX_BACKGROUND * 3 / 4);
        // Lookups and creates in one directory run in parallel; cached pages
        // are dropped when a file's size or mtime changes underneath.
        // Locks are ours to keep (in the cluster), not the local kernel's,
        // so that they hold across mounts.
        for cap in [
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_AUTO_INVAL_DATA,
            InitFlags::FUSE_POSIX_LOCKS,
            InitFlags::FUSE_FLOCK_LOCKS,
            // Listings carry attributes: `ls -l`, `find`, `cp -a` and
            // `diff -r` need no lookup per entry.
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            // The cluster drops set-id bits on a write, truncate or chown
            // by someone other than the owner, inside the commit: the
            // kernel's own attempt would be a chmod that the caller, not
            // being the owner, may not make.
            InitFlags::FUSE_HANDLE_KILLPRIV,
        ] {
            if let Err(missing) = config.add_capabilities(cap) {
                tracing::info!("the kernel does not offer {missing:?}");
            }
        }
        // Acting as local users, the kernel enforces ACLs too (this flag
        // turns default_permissions on) and leaves the umask to us, since a
        // default ACL replaces it. Signed in as one user, local ids mean
        // nothing to the kernel's checks: ACL xattrs pass through to the
        // meta servers, which enforce them (Linux 6.2 and later pass them
        // through; older kernels answer EOPNOTSUPP to setfacl there).
        if self.trusted {
            if let Err(missing) = config.add_capabilities(InitFlags::FUSE_POSIX_ACL) {
                tracing::info!("the kernel does not offer {missing:?}");
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        let inner = self.inner.clone();
        // Called on the session thread, outside the runtime: block on it.
        let flushed = self.rt.block_on(async move {
            let flushed = tokio::time::timeout(DESTROY_FLUSH_TIMEOUT, inner.flush_all()).await;
            inner.session.end().await;
            flushed
        });
        if flushed.is_err() {
            tracing::error!("buffered writes not committed within {DESTROY_FLUSH_TIMEOUT:?} of unmount");
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.inner.stats.count("lookup");
        let (inner, caller, name) = (self.inner.clone(), caller(req), bytes(name));
        let ttl = self.inner.ttl;
        self.rt.spawn(async move {
            match inner.lookup(caller, parent.0, name).await {
                Ok((Some(a), keep)) => reply.entry(&keep, &a, Generation(0)),
                // A negative entry (node 0): the kernel knows the name is
                // missing for the TTL, as it knows a found one. Creates
                // and renames through this mount replace it at once.
                Ok((None, keep)) => reply.entry(&keep, &bare_attr(0, fuser::FileType::RegularFile), Generation(0)),
                Err(FsError(Errno::ENOENT)) => {
                    reply.entry(&ttl, &bare_attr(0, fuser::FileType::RegularFile), Generation(0))
                }
                Err(e) => reply.fail(e),
            }
        });
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.inner.stats.count("getattr");
        let (inner, caller, ttl) = (self.inner.clone(), caller(req), self.inner.ttl);
        self.serve(reply, async move { inner.getattr(caller, ino.0).await }, move |r, a| {
            r.attr(&ttl, &a)
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.inner.stats.count("setattr");
        let change = pb::SetAttr {
            ino: ino.0,
            perm: mode.map(perm),
            uid,
            gid,
            size,
            atime: atime.map(time_spec),
            mtime: mtime.map(time_spec),
            through_writer: fh.is_some_and(|fh| self.inner.writable(fh.0)),
        };
        let (inner, caller, ttl) = (self.inner.clone(), caller(req), self.inner.ttl);
        self.serve(
            reply,
            async move { inner.setattr(caller, change).await },
            move |r, a| r.attr(&ttl, &a),
        );
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.inner.stats.count("readlink");
        let (inner, caller) = (self.inner.clone(), caller(req));
        self.serve(reply, async move { inner.readlink(caller, ino.0).await }, |r, d| {
            r.data(&d)
        });
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        self.inner.stats.count("mknod");
        let kind = match mknod_kind(mode) {
            Ok(k) => k,
            Err(e) => return reply.fail(e),
        };
        let node = pb::MakeNode {
            parent: parent.0,
            name: bytes(name),
            kind: kind as i32,
            perm: perm(mode),
            rdev,
            symlink_target: Vec::new(),
            umask: Some(umask),
            ..Default::default()
        };
        self.make_node(req, reply, node);
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        self.inner.stats.count("mkdir");
        let node = pb::MakeNode {
            parent: parent.0,
            name: bytes(name),
            kind: pb::FileKind::Directory as i32,
            perm: perm(mode),
            rdev: 0,
            symlink_target: Vec::new(),
            umask: Some(umask),
            ..Default::default()
        };
        self.make_node(req, reply, node);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.inner.stats.count("unlink");
        let (inner, caller, name) = (self.inner.clone(), caller(req), bytes(name));
        self.serve_empty(reply, async move { inner.unlink(caller, parent.0, name).await });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.inner.stats.count("rmdir");
        let (inner, caller, name) = (self.inner.clone(), caller(req), bytes(name));
        self.serve_empty(reply, async move { inner.rmdir(caller, parent.0, name).await });
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        self.inner.stats.count("symlink");
        let node = pb::MakeNode {
            parent: parent.0,
            name: bytes(link_name),
            kind: pb::FileKind::Symlink as i32,
            perm: 0o777,
            rdev: 0,
            symlink_target: bytes(target.as_os_str()),
            umask: None,
            ..Default::default()
        };
        self.make_node(req, reply, node);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.inner.stats.count("rename");
        let rename = pb::Rename {
            parent: parent.0,
            name: bytes(name),
            new_parent: newparent.0,
            new_name: bytes(newname),
            flags: flags.bits(),
            keep_for_session: None,
        };
        let (inner, caller) = (self.inner.clone(), caller(req));
        self.serve_empty(reply, async move { inner.rename(caller, rename).await });
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        self.inner.stats.count("link");
        let (inner, caller, name) = (self.inner.clone(), caller(req), bytes(newname));
        self.serve_entry(reply, async move { inner.link(caller, ino.0, newparent.0, name).await });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.inner.stats.count("open");
        let (inner, caller) = (self.inner.clone(), caller(req));
        // FOPEN_KEEP_CACHE only when nobody committed since this mount
        // last closed the file: otherwise the kernel drops its cached pages
        // at the open, which with the fresh layout gives close-to-open.
        self.serve(
            reply,
            async move { inner.open(caller, ino.0, flags.0).await },
            |r, (fh, keep)| {
                let flags = if keep {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                r.opened(FileHandle(fh), flags)
            },
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.inner.stats.count("create");
        let node = pb::MakeNode {
            parent: parent.0,
            name: bytes(name),
            kind: pb::FileKind::Regular as i32,
            perm: perm(mode),
            rdev: 0,
            symlink_target: Vec::new(),
            umask: Some(umask),
            ..Default::default()
        };
        let (inner, caller, ttl) = (self.inner.clone(), caller(req), self.inner.ttl);
        self.serve(
            reply,
            async move { inner.create(caller, node, flags).await },
            move |r, (a, fh)| r.created(&ttl, &a, Generation(0), FileHandle(fh), FopenFlags::empty()),
        );
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.inner.stats.count("read");
        let inner = self.inner.clone();
        self.serve(reply, async move { inner.read(fh.0, offset, size).await }, |r, d| {
            r.data(&d)
        });
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.inner.stats.count("write");
        let Ok(len) = u32::try_from(data.len()) else {
            return reply.fail(FsError(Errno::EINVAL));
        };
        // Permission to write was checked at open: a write by the user the
        // file already commits as needs not the groups from /proc (a read
        // of /proc/PID/status per write was a tenth of a write's cost).
        let caller = match self.inner.writes_as(fh.0, req.uid(), req.gid()) {
            true => None,
            false => Some(caller(req)),
        };
        let (inner, data) = (self.inner.clone(), data.to_vec());
        self.serve(
            reply,
            async move { inner.write(caller, fh.0, offset, data).await },
            move |r, ()| r.written(len),
        );
    }

    fn flush(&self, _req: &Request, ino: INodeNo, fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty) {
        self.inner.stats.count("flush");
        let inner = self.inner.clone();
        self.serve_empty(reply, async move {
            // A close drops the process's fcntl locks on the file.
            inner.session.release_owner(ino.0, lock_owner.0).await;
            inner.flush(fh.0).await
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.inner.stats.count("release");
        let inner = self.inner.clone();
        self.serve_empty(reply, async move {
            // The last close of an open file drops its flock.
            if let Some(owner) = lock_owner {
                inner.session.release_owner(ino.0, owner.0).await;
            }
            inner.release(fh.0).await
        });
    }

    fn getlk(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        self.inner.stats.count("getlk");
        let (inner, caller) = (self.inner.clone(), caller(req));
        let args = LockArgs::new(ino.0, lock_owner.0, start, end, typ, pid);
        self.serve(
            reply,
            async move {
                inner.settle(args.ino).await?;
                inner.session.get(caller, args).await
            },
            |r, (start, end, typ, pid)| r.locked(start, end, typ, pid),
        );
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        self.inner.stats.count("setlk");
        let (inner, caller) = (self.inner.clone(), caller(req));
        let args = LockArgs::new(ino.0, lock_owner.0, start, end, typ, pid);
        self.serve_empty(reply, async move {
            inner.settle(args.ino).await?;
            inner.session.set(caller, args, sleep).await
        });
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.inner.stats.count("fsync");
        let inner = self.inner.clone();
        self.serve_empty(reply, async move { inner.fsync(fh.0).await });
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.inner.stats.count("opendir");
        // Permission to list is checked by each Readdir on the cluster.
        reply.opened(FileHandle(self.inner.opendir()), FopenFlags::empty());
    }

    fn readdir(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectory) {
        self.inner.stats.count("readdir");
        let (inner, caller) = (self.inner.clone(), caller(req));
        self.serve(
            reply,
            async move { inner.readdir(caller, ino.0, fh.0, offset).await },
            |mut r, items| {
                for item in items {
                    if r.add(INodeNo(item.ino), item.offset, item.kind, OsStr::from_bytes(&item.name)) {
                        break; // full: the kernel asks again from the last offset added
                    }
                }
                r.ok()
            },
        );
    }

    fn readdirplus(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectoryPlus) {
        self.inner.stats.count("readdirplus");
        let (inner, caller, ttl) = (self.inner.clone(), caller(req), self.inner.ttl);
        self.serve(
            reply,
            async move { inner.readdir(caller, ino.0, fh.0, offset).await },
            move |mut r, items| {
                for item in items {
                    // Without attributes (`.`, `..`, an unsearchable
                    // directory) the entry is only a name: a zero TTL makes
                    // the kernel look it up before using it.
                    let (attr, ttl) = match item.attr {
                        Some(a) => (a, ttl),
                        None => (bare_attr(item.ino, item.kind), Duration::ZERO),
                    };
                    let name = OsStr::from_bytes(&item.name);
                    if r.add(INodeNo(item.ino), item.offset, name, &ttl, &attr, Generation(0)) {
                        break;
                    }
                }
                r.ok()
            },
        );
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.inner.stats.count("releasedir");
        self.inner.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.inner.stats.count("fsyncdir");
        // Every namespace change is committed by a Raft majority before it
        // is acknowledged: only files created here and not committed yet
        // are left to make durable.
        let inner = self.inner.clone();
        self.serve_empty(reply, async move { inner.settle_folder(ino.0).await });
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.inner.stats.count("statfs");
        let (inner, caller) = (self.inner.clone(), caller(req));
        self.serve(reply, async move { inner.statfs(caller).await }, |r, s| {
            // With a quota, df shows the user's own space: the limit as the
            // size, their usage as used.
            let (total, used) = match s.quota_bytes {
                0 => (STATFS_TOTAL_BYTES, s.bytes),
                q => (q, s.used_bytes),
            };
            let (total_inodes, used_inodes) = match s.quota_inodes {
                0 => (STATFS_TOTAL_INODES, s.inodes),
                q => (q, s.used_inodes),
            };
            let used_blocks = used.div_ceil(STATFS_BSIZE);
            let blocks = (total / STATFS_BSIZE).max(used_blocks);
            let files = total_inodes.max(used_inodes);
            let free = blocks - used_blocks;
            let name_max = if s.name_max == 0 { 255 } else { s.name_max };
            r.statfs(
                blocks,
                free,
                free,
                files,
                files - used_inodes,
                STATFS_BSIZE as u32,
                name_max,
                STATFS_BSIZE as u32,
            )
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.inner.stats.count("setxattr");
        let set = pb::SetXattr {
            ino: ino.0,
            name: bytes(name),
            value: value.to_vec(),
            flags: flags as u32,
        };
        let (inner, caller) = (self.inner.clone(), caller(req));
        self.serve_empty(reply, async move { inner.setxattr(caller, set).await });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.inner.stats.count("getxattr");
        let (inner, caller, name) = (self.inner.clone(), caller(req), bytes(name));
        self.serve(
            reply,
            async move { inner.getxattr(caller, ino.0, name, size).await },
            xattr_reply,
        );
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.inner.stats.count("listxattr");
        let (inner, caller) = (self.inner.clone(), caller(req));
        self.serve(
            reply,
            async move { inner.listxattr(caller, ino.0, size).await },
            xattr_reply,
        );
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.inner.stats.count("removexattr");
        let (inner, caller, name) = (self.inner.clone(), caller(req), bytes(name));
        self.serve_empty(reply, async move { inner.removexattr(caller, ino.0, name).await });
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.inner.stats.count("access");
        let (inner, caller) = (self.inner.clone(), caller(req));
        let mask = mask.bits() as u32;
        self.serve_empty(reply, async move { inner.access(caller, ino.0, mask).await });
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.inner.stats.count("fallocate");
        // Only plain preallocation; ENOSYS would make the kernel stop asking
        // for that too, so other modes are EOPNOTSUPP.
        if mode != 0 {
            return reply.fail(FsError(Errno::EOPNOTSUPP));
        }
        let (inner, caller) = (self.inner.clone(), caller(req));
        self.serve_empty(reply, async move {
            let Some(end) = offset.checked_add(length) else {
                return fail(Errno::EFBIG);
            };
            inner.fallocate(caller, fh.0, ino.0, end).await
        });
    }
}

fn xattr_reply(r: ReplyXattr, out: XattrOut) {
    match out {
        XattrOut::Size(n) => r.size(n),
        XattrOut::Data(d) => r.data(&d),
    }
}
