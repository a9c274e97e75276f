//! The work behind each FUSE callback, as async functions on the mount's
//! shared state: namespace calls to the meta cluster on behalf of the
//! calling process, and the tables of open files and directories.

use super::convert::{self, fail, file_attr, file_type, unexpected, FsError, FsResult, R as READ, W as WRITE};
use super::files::{OpenFile, SetOutcome, Who};
use super::idmap::IdMap;
use super::listing::{Change, Listings, Plan, PlanKey, LISTING_MAX};
use super::open::OpenTable;
use super::session::Session;
use fuser::{FileAttr, FileType};
use nimbus_client::MetaClient;
use nimbus_common::Errno;
use nimbus_proto as pb;
use nimbus_proto::ns_reply::Result as R;
use nimbus_proto::ns_request::Op;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Open flags the data path cares about (Linux values).
const O_ACCMODE: i32 = 0o3;
const O_WRONLY: i32 = 0o1;
const O_RDWR: i32 = 0o2;
const O_TRUNC: i32 = 0o1000;
const O_DSYNC: i32 = 0o10000;

/// Files whose cached pages the mount remembers it may keep.
const MAX_CACHED_FILES: usize = 65_536;

/// The xattr holding a file's capabilities (setcap).
const CAPABILITY_XATTR: &[u8] = b"security.capability";

/// Directory entries asked for per Readdir call.
const READDIR_PAGE: u32 = 512;

/// One open file descriptor's state.
struct Handle {
    ino: u64,
    file: Arc<OpenFile>,
    /// O_SYNC or O_DSYNC: every write is durable before it returns.
    sync: bool,
    /// Opened for writing (O_WRONLY or O_RDWR).
    writable: bool,
}

/// The last Readdir page of an open directory, so that the kernel's small
/// readdir buffers do not cost a round trip each.
struct DirCache {
    after: u64,
    entries: Vec<pb::DirEntry>,
    more: bool,
}

/// One directory entry for the kernel, at a stable offset.
pub struct DirItem {
    pub ino: u64,
    pub offset: u64,
    pub kind: FileType,
    pub name: Vec<u8>,
    /// Its attributes, for readdirplus (None for `.`/`..` and entries of
    /// directories the caller may list but not search).
    pub attr: Option<FileAttr>,
}

/// What getxattr/listxattr answer: the size asked for, or the bytes.
pub enum XattrOut {
    Size(u32),
    Data(Vec<u8>),
}

/// Who the mount acts as.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    /// The signed-in user.
    pub nimbus_uid: u32,
    /// An administrator: the file-system superuser.
    pub superuser: bool,
    /// Each request acts as its local process (--as-local-users).
    pub as_local_users: bool,
}

/// The mount's state, shared by every request.
pub struct Inner {
    pub client: Arc<MetaClient>,
    /// How long the kernel may cache names and attributes.
    pub ttl: Duration,
    /// What this mount holds in the cluster: locks, removed-but-open files.
    pub session: Arc<Session>,
    /// Nimbus ids as the workstation shows them, and back.
    pub ids: Arc<IdMap>,
    /// Requests served and what they cost, for --metrics.
    pub stats: Arc<super::stats::Stats>,
    identity: Identity,
    files: OpenTable,
    handles: Mutex<HashMap<u64, Handle>>,
    /// Per inode, the contents (fingerprint) the kernel's cached pages
    /// match as of the last close here: an open that finds the same keeps
    /// them (FOPEN_KEEP_CACHE) instead of reading the file again.
    cached: Mutex<HashMap<u64, u64>>,
    dirs: Mutex<HashMap<u64, Option<DirCache>>>,
    next_fh: AtomicU64,
    /// Files created here that the cluster gets at their first commit, by
    /// inode: their folder and name.
    unborn: Mutex<HashMap<u64, (u64, Vec<u8>)>>,
    /// Whether new regular files are created with their first commit.
    create_at_commit: bool,
    /// Folders read whole to answer lookups (listing.rs).
    listings: Mutex<Listings>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in another request must not take the whole mount down.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    pub fn new(
        client: Arc<MetaClient>,
        ttl: Duration,
        ids: IdMap,
        identity: Identity,
        write_budget: Arc<super::files::WriteBudget>,
        create_at_commit: bool,
        listings: Listings,
    ) -> Inner {
        Inner {
            identity,
            stats: Arc::default(),
            session: Arc::new(Session::new(client.clone())),
            client,
            ttl,
            ids: Arc::new(ids),
            files: OpenTable::new(write_budget),
            handles: Mutex::default(),
            cached: Mutex::default(),
            dirs: Mutex::default(),
            next_fh: AtomicU64::new(1),
            unborn: Mutex::default(),
            create_at_commit,
            listings: Mutex::new(listings),
        }
    }

    /// Commits the create of `ino`, if the cluster does not have it yet:
    /// before anything the cluster must see it for (a second open, a link,
    /// a lock, an xattr).
    pub async fn settle(&self, ino: u64) -> FsResult<()> {
        if !locked(&self.unborn).contains_key(&ino) {
            return Ok(());
        }
        let Some(file) = self.open_file(ino) else {
            locked(&self.unborn).remove(&ino);
            return Ok(());
        };
        let (before, unborn) = (self.writes_done(), file.is_unborn());
        let r = file.flush(&self.client).await;
        self.committed(ino, &file, before, unborn);
        r
    }

    /// After a commit of `file` that began when this mount had finished
    /// `before` namespace writes, `unborn` whether the cluster did not have
    /// the file then: if that created it, it is no longer unborn and its
    /// folder's listing takes the new name in; else the listings ask for
    /// its attributes again.
    fn committed(&self, ino: u64, file: &OpenFile, before: u64, unborn: bool) {
        if file.is_unborn() {
            return;
        }
        let birth = locked(&self.unborn).remove(&ino);
        let after = self.writes_done();
        if after == before {
            return;
        }
        let mut listings = locked(&self.listings);
        match (birth, file.known_attr()) {
            (Some((parent, name)), Some(a)) if unborn => {
                listings.changed(parent, Change::Added(&name, a), before, after)
            }
            _ => listings.touched(ino, before, after),
        }
    }

    /// After a change to the attributes of `ino` (setattr, xattrs) that
    /// began when this mount had finished `before` namespace writes.
    fn touched(&self, ino: u64, before: u64) {
        let after = self.writes_done();
        locked(&self.listings).touched(ino, before, after);
    }

    /// Commits the creates of files in `dirs` the cluster does not have
    /// yet: before anything that reads or changes those folders (a
    /// listing, their times, a name in them). A create that fails here
    /// fails again, with its error, at the file's close.
    async fn settle_in(&self, dirs: &[u64]) {
        for ino in self.unborn_in(dirs) {
            if let Err(e) = self.settle(ino).await {
                tracing::warn!("inode {ino}: creating the file failed: {}", e.0);
            }
        }
    }

    /// fsync of a folder: the creates of files in it that the cluster does
    /// not have yet are committed, or their error returned.
    pub async fn settle_folder(&self, dir: u64) -> FsResult<()> {
        for ino in self.unborn_in(&[dir]) {
            self.settle(ino).await?;
        }
        Ok(())
    }

    /// The files in `dirs` the cluster does not have yet.
    fn unborn_in(&self, dirs: &[u64]) -> Vec<u64> {
        let unborn = locked(&self.unborn);
        if unborn.is_empty() {
            return Vec::new();
        }
        unborn
            .iter()
            .filter(|(_, (parent, _))| dirs.contains(parent))
            .map(|(ino, _)| *ino)
            .collect()
    }

    async fn call(&self, caller: pb::Caller, op: Op) -> FsResult<R> {
        Ok(self.client.call_as(caller, op).await?)
    }

    async fn attr_call(&self, caller: pb::Caller, op: Op, what: &str) -> FsResult<pb::Attr> {
        match self.call(caller, op).await? {
            R::Attr(a) => Ok(a),
            other => unexpected(what, &other),
        }
    }

    async fn done_call(&self, caller: pb::Caller, op: Op, what: &str) -> FsResult<()> {
        match self.call(caller, op).await? {
            R::Done(_) | R::Attr(_) => Ok(()),
            other => unexpected(what, &other),
        }
    }

    fn open_file(&self, ino: u64) -> Option<Arc<OpenFile>> {
        self.files.get(ino)
    }

    /// The kernel's view of `a`: an open file's size and mtime include the
    /// writes this mount has buffered; ids are the workstation's.
    fn view(&self, a: &pb::Attr) -> FileAttr {
        let mut attr = self.view_data(a);
        attr.uid = self.ids.uid_out(a.uid);
        attr.gid = self.ids.gid_out(a.gid);
        attr
    }

    fn view_data(&self, a: &pb::Attr) -> FileAttr {
        match self.open_file(a.ino) {
            Some(f) if a.kind == pb::FileKind::Regular as i32 => {
                // Changes folded into the next commit show at once.
                let mut a = match f.folded() {
                    Some(folded) => pb::Attr {
                        perm: folded.perm,
                        uid: folded.uid,
                        gid: folded.gid,
                        atime_ns: folded.atime_ns,
                        mtime_ns: folded.mtime_ns,
                        ctime_ns: a.ctime_ns.max(folded.ctime_ns),
                        ..*a
                    },
                    None => *a,
                };
                // 0: nothing written here since the last commit or utimens.
                // A write sets mtime to its own time, even back from a
                // future one a utimens set.
                if let Some(w) = Some(f.written_at()).filter(|&w| w != 0) {
                    a.mtime_ns = w;
                    a.ctime_ns = a.ctime_ns.max(w);
                }
                file_attr(&a, f.size())
            }
            _ => file_attr(a, a.size),
        }
    }

    /// Who `caller` acts as in the cluster, for folding decisions.
    fn who(&self, caller: &pb::Caller) -> Who {
        if self.identity.as_local_users {
            Who {
                uid: caller.uid,
                nimbus_uid: caller.uid,
                superuser: caller.uid == 0,
            }
        } else {
            Who {
                uid: caller.uid,
                nimbus_uid: self.identity.nimbus_uid,
                superuser: self.identity.superuser,
            }
        }
    }

    /// A name's attributes (None: there is no such name), and how long
    /// the kernel may keep that answer.
    pub async fn lookup(
        &self,
        caller: pb::Caller,
        parent: u64,
        name: Vec<u8>,
    ) -> FsResult<(Option<FileAttr>, Duration)> {
        self.settle_in(&[parent]).await;
        match self.listed(&caller, parent, &name).await {
            // A folder's times must count the files created in it here.
            Some((Some(a), ttl)) if self.unborn_in(&[a.ino]).is_empty() => return Ok((Some(self.view(&a)), ttl)),
            Some((None, ttl)) => return Ok((None, ttl)),
            _ => {}
        }
        let lookup = Op::Lookup(pb::Lookup { parent, name });
        let found = self.attr_call(caller.clone(), lookup.clone(), "Lookup").await;
        let mut a = match found {
            Ok(a) => a,
            Err(FsError(Errno::ENOENT)) => {
                locked(&self.listings).looked(parent, Instant::now());
                return Ok((None, self.ttl));
            }
            Err(e) => return Err(e),
        };
        if !self.unborn_in(&[a.ino]).is_empty() {
            self.settle_in(&[a.ino]).await;
            a = self.attr_call(caller, lookup, "Lookup").await?;
        }
        locked(&self.listings).looked(parent, Instant::now());
        Ok((Some(self.view(&a)), self.ttl))
    }

    /// This mount's finished namespace writes: a listing read after this
    /// count holds every change it counts.
    fn writes_done(&self) -> u64 {
        self.client.counters().ns_writes_done.load(Ordering::SeqCst)
    }

    /// `name` in `parent` from the folder's listing (None inside: the
    /// listing says it is missing), read now if the lookups there call for
    /// it (listing.rs); None: ask the cluster.
    async fn listed(&self, caller: &pb::Caller, parent: u64, name: &[u8]) -> Option<(Option<pb::Attr>, Duration)> {
        let writes = self.writes_done();
        let plan = locked(&self.listings).plan(parent, name, caller, writes, Instant::now());
        if plan != Plan::List {
            return plan.answer();
        }
        let op = Op::Readdir(pb::ReadDir {
            ino: parent,
            after: 0,
            limit: LISTING_MAX,
            plus: true,
        });
        let read_at = Instant::now();
        match self.call(caller.clone(), op).await {
            Ok(R::Dir(page)) => {
                let mut listings = locked(&self.listings);
                listings.keep(parent, caller.clone(), writes, page, read_at);
                listings
                    .plan(parent, name, caller, self.writes_done(), Instant::now())
                    .answer()
            }
            other => {
                // Not listable for this caller (no read permission): the
                // lookups themselves still work.
                tracing::debug!("folder {parent} not listed for lookups: {:?}", other.map(|_| ()));
                locked(&self.listings).quiet(parent, Instant::now());
                None
            }
        }
    }

    pub async fn getattr(&self, caller: pb::Caller, ino: u64) -> FsResult<FileAttr> {
        // A file the cluster does not have yet: as this mount knows it.
        if let Some(known) = self
            .open_file(ino)
            .filter(|f| f.is_unborn())
            .and_then(|f| f.known_attr())
        {
            return Ok(self.view(&known));
        }
        self.settle_in(&[ino]).await;
        Ok(self.view(&self.raw_attr(caller, ino).await?))
    }

    async fn raw_attr(&self, caller: pb::Caller, ino: u64) -> FsResult<pb::Attr> {
        self.attr_call(caller, Op::Getattr(pb::GetAttr { ino }), "Getattr")
            .await
    }

    /// chmod, chown, truncate and utimens in one command; an open file's
    /// buffered writes are cut or committed to match (files.rs).
    pub async fn setattr(&self, caller: pb::Caller, mut change: pb::SetAttr) -> FsResult<FileAttr> {
        if let Some(uid) = change.uid {
            change.uid = Some(self.ids.uid_in(uid).await?);
        }
        if let Some(gid) = change.gid {
            change.gid = Some(self.ids.gid_in(gid).await?);
        }
        let who = self.who(&caller);
        let before = self.writes_done();
        let set = self.attr_call(caller, Op::Setattr(change), "Setattr");
        let outcome = match self.open_file(change.ino) {
            Some(file) => file.set_attr(&self.client, &change, who, set).await,
            None => set.await.map(SetOutcome::Applied),
        };
        self.touched(change.ino, before);
        let a = match outcome? {
            SetOutcome::Folded(a) => {
                self.stats.count("setattr_folded");
                a
            }
            SetOutcome::Applied(a) => a,
        };
        Ok(self.view(&a))
    }

    /// create (without opening), mknod, mkdir and symlink.
    pub async fn make_node(&self, caller: pb::Caller, node: pb::MakeNode) -> FsResult<FileAttr> {
        self.settle_in(&[node.parent]).await;
        let a = self.made(caller, node).await?;
        Ok(self.view(&a))
    }

    /// Makes a node in the cluster; the folder's listing takes it in, and
    /// a new folder's listing is known: empty.
    async fn made(&self, caller: pb::Caller, node: pb::MakeNode) -> FsResult<pb::Attr> {
        let before = self.writes_done();
        let (parent, name) = (node.parent, node.name.clone());
        let made = self.attr_call(caller.clone(), Op::MakeNode(node), "MakeNode").await;
        let after = self.writes_done();
        let mut listings = locked(&self.listings);
        // Refused: the listings are behind the count, and dropped.
        if let Ok(a) = &made {
            listings.changed(parent, Change::Added(&name, *a), before, after);
            if a.kind == pb::FileKind::Directory as i32 {
                listings.made_empty(a.ino, caller, before, after, Instant::now());
            }
        }
        made
    }

    pub async fn unlink(&self, caller: pb::Caller, parent: u64, name: Vec<u8>) -> FsResult<()> {
        self.settle_in(&[parent]).await;
        let open = self.open_target(&caller, parent, &name).await;
        let op = Op::Unlink(pb::Unlink {
            parent,
            name: name.clone(),
            keep_for_session: open.map(|_| self.session.id),
        });
        let before = self.writes_done();
        let done = self.done_call(caller, op, "Unlink").await;
        self.removed(parent, &name, before, done.is_ok());
        done?;
        self.kept(open).await;
        Ok(())
    }

    pub async fn rmdir(&self, caller: pb::Caller, parent: u64, name: Vec<u8>) -> FsResult<()> {
        self.settle_in(&[parent]).await;
        let before = self.writes_done();
        let op = Op::Rmdir(pb::Rmdir {
            parent,
            name: name.clone(),
        });
        let done = self.done_call(caller, op, "Rmdir").await;
        self.removed(parent, &name, before, done.is_ok());
        done
    }

    /// After an unlink or rmdir of `name` in `parent` that began when this
    /// mount had finished `before` namespace writes.
    fn removed(&self, parent: u64, name: &[u8], before: u64, ok: bool) {
        // A refusal leaves the listings behind the count: dropped.
        if ok {
            let after = self.writes_done();
            locked(&self.listings).changed(parent, Change::Removed(name), before, after);
        }
    }

    pub async fn rename(&self, caller: pb::Caller, mut rename: pb::Rename) -> FsResult<()> {
        self.settle_in(&[rename.parent, rename.new_parent]).await;
        // A plain rename replaces its target: keep an open one alive.
        let mut open = None;
        if rename.flags == 0 && (rename.parent, &rename.name) != (rename.new_parent, &rename.new_name) {
            open = self.open_target(&caller, rename.new_parent, &rename.new_name).await;
            rename.keep_for_session = open.map(|_| self.session.id);
        }
        let plain = rename.flags == 0;
        let (from, to) = (
            (rename.parent, rename.name.clone()),
            (rename.new_parent, rename.new_name.clone()),
        );
        let before = self.writes_done();
        self.done_call(caller, Op::Rename(rename), "Rename").await?;
        if plain {
            let after = self.writes_done();
            locked(&self.listings).renamed((from.0, &from.1), (to.0, &to.1), before, after);
        }
        self.kept(open).await;
        Ok(())
    }

    pub async fn link(&self, caller: pb::Caller, ino: u64, new_parent: u64, new_name: Vec<u8>) -> FsResult<FileAttr> {
        self.settle(ino).await?;
        self.settle_in(&[new_parent]).await;
        let op = Op::Link(pb::Link {
            ino,
            new_parent,
            new_name,
        });
        let a = self.attr_call(caller, op, "Link").await?;
        Ok(self.view(&a))
    }

    pub async fn readlink(&self, caller: pb::Caller, ino: u64) -> FsResult<Vec<u8>> {
        match self.call(caller, Op::Readlink(pb::Readlink { ino })).await? {
            R::Data(d) => Ok(d),
            other => unexpected("Readlink", &other),
        }
    }

    pub async fn statfs(&self, caller: pb::Caller) -> FsResult<pb::FsStats> {
        match self.call(caller, Op::Statfs(pb::StatFs {})).await? {
            R::Stats(s) => Ok(s),
            other => unexpected("Statfs", &other),
        }
    }

    pub async fn setxattr(&self, caller: pb::Caller, mut set: pb::SetXattr) -> FsResult<()> {
        self.settle(set.ino).await?;
        self.capability_changes(set.ino, &set.name);
        if IdMap::is_acl(&set.name) {
            set.value = self.ids.acl_in(std::mem::take(&mut set.value)).await?;
        }
        let (ino, before) = (set.ino, self.writes_done());
        let done = self.done_call(caller, Op::Setxattr(set), "Setxattr").await;
        self.touched(ino, before);
        done
    }

    pub async fn removexattr(&self, caller: pb::Caller, ino: u64, name: Vec<u8>) -> FsResult<()> {
        self.settle(ino).await?;
        self.capability_changes(ino, &name);
        let before = self.writes_done();
        let done = self
            .done_call(caller, Op::Removexattr(pb::RemoveXattr { ino, name }), "Removexattr")
            .await;
        self.touched(ino, before);
        done
    }

    /// An attribute's value, or its size when `size` is 0 (a probe).
    pub async fn getxattr(&self, caller: pb::Caller, ino: u64, name: Vec<u8>, size: u32) -> FsResult<XattrOut> {
        let acl = IdMap::is_acl(&name);
        // The kernel asks for a file's capabilities before each write to it
        // (to drop them): for a file open here, one answer is enough.
        let open = (name == CAPABILITY_XATTR).then(|| self.open_file(ino)).flatten();
        if open.as_ref().is_some_and(|f| f.has_no_capability()) {
            return fail(Errno::ENODATA);
        }
        self.settle(ino).await?;
        let got = self.call(caller, Op::Getxattr(pb::GetXattr { ino, name })).await;
        if let (Some(f), Err(FsError(Errno::ENODATA))) = (&open, &got) {
            f.set_no_capability(true);
        }
        match got? {
            R::Data(v) if acl => sized(self.ids.acl_out(v), size),
            R::Data(v) => sized(v, size),
            other => unexpected("Getxattr", &other),
        }
    }

    /// A change of `name` on `ino` through this mount: forget that the file
    /// had no capabilities.
    fn capability_changes(&self, ino: u64, name: &[u8]) {
        if name == CAPABILITY_XATTR {
            if let Some(f) = self.open_file(ino) {
                f.set_no_capability(false);
            }
        }
    }

    /// Attribute names, each followed by a NUL, or their size when `size`
    /// is 0.
    pub async fn listxattr(&self, caller: pb::Caller, ino: u64, size: u32) -> FsResult<XattrOut> {
        self.settle(ino).await?;
        match self.call(caller, Op::Listxattr(pb::ListXattr { ino })).await? {
            R::Names(n) => {
                let mut out = Vec::new();
                for name in n.names {
                    out.extend_from_slice(&name);
                    out.push(0);
                }
                sized(out, size)
            }
            other => unexpected("Listxattr", &other),
        }
    }

    /// The attributes of `ino` if the caller has the rights in `mask`
    /// (R|W|X): the cluster decides, from mode bits, ACL and shares.
    async fn checked_attr(&self, caller: pb::Caller, ino: u64, mask: u32) -> FsResult<pb::Attr> {
        self.settle(ino).await?;
        self.attr_call(caller, Op::Access(pb::Access { ino, mask: mask & 7 }), "Access")
            .await
    }

    /// access(2), for the calling process.
    pub async fn access(&self, caller: pb::Caller, ino: u64, mask: u32) -> FsResult<()> {
        self.checked_attr(caller, ino, mask).await.map(drop)
    }

    /// Opens a regular file: fresh attributes and layout from the cluster
    /// (close-to-open), permission from the mode bits. Also says whether
    /// the kernel may keep the file's cached pages: only when nobody
    /// committed since this mount last closed it.
    pub async fn open(&self, caller: pb::Caller, ino: u64, flags: i32) -> FsResult<(u64, bool)> {
        let mut want = match flags & O_ACCMODE {
            O_WRONLY => WRITE,
            O_RDWR => READ | WRITE,
            _ => READ,
        };
        if flags & O_TRUNC != 0 {
            want |= WRITE;
        }
        self.settle(ino).await?;
        let file = self.files.acquire(ino, &caller);
        match file.refresh(self.client.as_ref(), caller, want).await {
            Ok(Some(a)) => file.known(&a),
            Ok(None) => tracing::warn!("the cluster answered an open of inode {ino} without attributes"),
            Err(e) => {
                self.put_back(ino).await;
                return Err(e);
            }
        }
        let seen = file.fingerprint().await;
        let keep = locked(&self.cached).get(&ino) == Some(&seen);
        Ok((self.new_handle(ino, file, flags), keep))
    }

    /// Creates a regular file and opens it.
    pub async fn create(&self, caller: pb::Caller, node: pb::MakeNode, flags: i32) -> FsResult<(FileAttr, u64)> {
        if self.create_at_commit && node.kind == pb::FileKind::Regular as i32 {
            return self.create_at_first_commit(caller, node, flags).await;
        }
        let a = self.made(caller.clone(), node).await?;
        // A new file is empty: nothing to read from the cluster.
        let file = self.files.acquire(a.ino, &caller);
        file.known(&a);
        // Nothing sets capabilities on create.
        file.set_no_capability(true);
        let fh = self.new_handle(a.ino, file, flags);
        Ok((self.view(&a), fh))
    }

    /// Creates a regular file as the cluster will when this mount first
    /// commits it: the cluster checks now that it would (name, rights) and
    /// says with what attributes, without a commit; the file gets an inode
    /// number this mount reserved, and its create goes with its contents
    /// at close or fsync, as one command. Until then only this mount sees
    /// it; anything else that needs it in the cluster commits it first
    /// ([`Inner::settle`]). A create refused then (another mount took the
    /// name, the quota filled) fails the close with its errno.
    async fn create_at_first_commit(
        &self,
        caller: pb::Caller,
        node: pb::MakeNode,
        flags: i32,
    ) -> FsResult<(FileAttr, u64)> {
        let planned = self.plan(&caller, &node).await?;
        let ino = self.session.next_ino().await?;
        let (parent, name) = (node.parent, node.name.clone());
        let node = pb::MakeNode {
            ino,
            session: self.session.id,
            // The times the kernel is shown are the ones the file keeps.
            born_ns: planned.ctime_ns,
            ..node
        };
        let a = pb::Attr { ino, ..planned };
        let file = self.files.acquire(ino, &caller);
        file.known(&a);
        file.set_no_capability(true);
        file.create_with_first_commit(node).await;
        locked(&self.unborn).insert(ino, (parent, name));
        self.stats.count("create_at_commit");
        let fh = self.new_handle(ino, file, flags);
        Ok((self.view(&a), fh))
    }

    /// What the cluster will make of `node` when its create is committed
    /// (its rights and name checked now): from the plan kept with the
    /// folder's listing when that says the name is free (listing.rs), else
    /// asked for. A plan that no longer holds at the commit (another mount
    /// took the name, the quota filled) fails the close with its errno.
    async fn plan(&self, caller: &pb::Caller, node: &pb::MakeNode) -> FsResult<pb::Attr> {
        let key = PlanKey::of(node);
        let writes = self.writes_done();
        let kept = locked(&self.listings).planned(node.parent, &node.name, caller, writes, key, Instant::now());
        if let Some(a) = kept {
            self.stats.count("create_planned_here");
            return Ok(a);
        }
        let at = Instant::now();
        let a = self
            .attr_call(caller.clone(), Op::PlanMakeNode(node.clone()), "PlanMakeNode")
            .await?;
        locked(&self.listings).keep_plan(node.parent, caller, writes, key, a, at);
        Ok(a)
    }

    /// Drops one handle's hold on the file of `ino`; at the last one, a
    /// file removed while open may be freed.
    async fn put_back(&self, ino: u64) {
        if self.files.put_back(ino) {
            self.session.forget(ino).await;
        }
    }

    /// The inode `name` in `parent` names, if it is a regular file open on
    /// this mount: removing its last name must not free it under the open
    /// descriptors. Errors are left for the removal itself to report.
    async fn open_target(&self, caller: &pb::Caller, parent: u64, name: &[u8]) -> Option<u64> {
        if self.files.is_empty() {
            return None;
        }
        let lookup = Op::Lookup(pb::Lookup {
            parent,
            name: name.to_vec(),
        });
        let a = self.attr_call(caller.clone(), lookup, "Lookup").await.ok()?;
        (a.kind == pb::FileKind::Regular as i32 && self.files.get(a.ino).is_some()).then_some(a.ino)
    }

    /// After removing a name of open file `open` with keep_for_session: the
    /// cluster keeps it (if that was its last name) until the last close.
    async fn kept(&self, open: Option<u64>) {
        let Some(ino) = open else {
            return;
        };
        self.session.keeping(ino);
        if !self.files.mark_kept(ino) {
            // Closed in the meantime: nothing will forget it later.
            self.session.forget(ino).await;
        }
    }

    fn new_handle(&self, ino: u64, file: Arc<OpenFile>, flags: i32) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let sync = flags & O_DSYNC != 0; // O_SYNC includes the O_DSYNC bit
        let writable = matches!(flags & O_ACCMODE, O_WRONLY | O_RDWR);
        if writable {
            file.writer(true);
        }
        locked(&self.handles).insert(
            fh,
            Handle {
                ino,
                file,
                sync,
                writable,
            },
        );
        fh
    }

    /// Whether `fh` is a descriptor opened for writing.
    pub fn writable(&self, fh: u64) -> bool {
        locked(&self.handles).get(&fh).is_some_and(|h| h.writable)
    }

    fn handle(&self, fh: u64) -> FsResult<(Arc<OpenFile>, bool)> {
        match locked(&self.handles).get(&fh) {
            Some(h) => Ok((h.file.clone(), h.sync)),
            None => fail(Errno::EBADF),
        }
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let (file, _) = self.handle(fh)?;
        file.read(&self.client, offset, size).await
    }

    /// Whether a write through `fh` by `uid`/`gid` commits as the writer the
    /// file has recorded, so that the caller's groups need not be read.
    pub fn writes_as(&self, fh: u64, uid: u32, gid: u32) -> bool {
        self.handle(fh).is_ok_and(|(file, _)| file.writes_as(uid, gid))
    }

    pub async fn write(&self, caller: Option<pb::Caller>, fh: u64, offset: u64, data: Vec<u8>) -> FsResult<()> {
        let (file, sync) = self.handle(fh)?;
        file.write(&self.client, caller, offset, &data).await?;
        if sync {
            file.fsync(&self.client).await?;
        }
        Ok(())
    }

    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        let (file, _) = self.handle(fh)?;
        let (before, unborn) = (self.writes_done(), file.is_unborn());
        let r = file.flush(&self.client).await;
        self.committed(file.ino(), &file, before, unborn);
        r
    }

    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        let (file, _) = self.handle(fh)?;
        let (before, unborn) = (self.writes_done(), file.is_unborn());
        let r = file.fsync(&self.client).await;
        self.committed(file.ino(), &file, before, unborn);
        r
    }

    /// The last close of a descriptor: commits what is buffered.
    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let Some(h) = locked(&self.handles).remove(&fh) else {
            return fail(Errno::EBADF);
        };
        let (before, unborn) = (self.writes_done(), h.file.is_unborn());
        let r = h.file.flush(&self.client).await;
        self.committed(h.ino, &h.file, before, unborn);
        if h.writable {
            h.file.writer(false);
        }
        // After a refused commit the kernel's pages hold writes the cluster
        // does not: they must not outlive this open.
        let seen = match r {
            Ok(()) => Some(h.file.fingerprint().await),
            Err(_) => None,
        };
        {
            let mut cached = locked(&self.cached);
            if cached.len() >= MAX_CACHED_FILES {
                cached.clear();
            }
            match seen {
                Some(seen) => cached.insert(h.ino, seen),
                None => cached.remove(&h.ino),
            };
        }
        if let Err(e) = r {
            tracing::error!("inode {}: writes lost at close: {}", h.ino, e.0);
        }
        self.put_back(h.ino).await;
        if self.open_file(h.ino).is_none_or(|f| !f.is_unborn()) {
            locked(&self.unborn).remove(&h.ino);
        }
        r
    }

    /// fallocate mode 0: grows the file to `offset + length` if shorter.
    pub async fn fallocate(&self, caller: pb::Caller, fh: u64, ino: u64, end: u64) -> FsResult<()> {
        self.settle(ino).await?;
        let (file, _) = self.handle(fh)?;
        let grow = pb::SetAttr {
            ino,
            size: Some(end),
            through_writer: self.writable(fh),
            ..Default::default()
        };
        file.grow(end, self.attr_call(caller, Op::Setattr(grow), "Setattr"))
            .await
    }

    /// Commits every open file's buffered writes (at unmount).
    pub async fn flush_all(&self) {
        for (ino, f) in self.files.all() {
            if let Err(e) = f.flush(&self.client).await {
                tracing::error!("inode {ino}: writes lost at unmount: {}", e.0);
            }
        }
    }

    pub fn opendir(&self) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        locked(&self.dirs).insert(fh, None);
        fh
    }

    pub fn releasedir(&self, fh: u64) {
        locked(&self.dirs).remove(&fh);
    }

    /// Entries from `offset` on. "." and ".." sit at offsets 1 and 2; a real
    /// entry sits at its cookie + 2, and cookies are stable for as long as
    /// the entry exists, so an offset stays valid while the directory
    /// changes.
    pub async fn readdir(&self, caller: pb::Caller, ino: u64, fh: u64, offset: u64) -> FsResult<Vec<DirItem>> {
        self.settle_in(&[ino]).await;
        let mut out = Vec::new();
        if offset == 0 {
            // A rewind must see the directory as it is now.
            if let Some(c) = locked(&self.dirs).get_mut(&fh) {
                *c = None;
            }
            out.push(DirItem {
                ino,
                offset: 1,
                kind: FileType::Directory,
                name: b".".to_vec(),
                attr: None,
            });
        }
        if offset <= 1 {
            let lookup = Op::Lookup(pb::Lookup {
                parent: ino,
                name: b"..".to_vec(),
            });
            let parent = self
                .attr_call(caller.clone(), lookup, "Lookup")
                .await
                .map_or(ino, |a| a.ino);
            out.push(DirItem {
                ino: parent,
                offset: 2,
                kind: FileType::Directory,
                name: b"..".to_vec(),
                attr: None,
            });
        }
        let after = offset.saturating_sub(2);
        for e in self.dir_page(caller, ino, fh, after).await? {
            out.push(DirItem {
                ino: e.ino,
                offset: e.cookie.saturating_add(2),
                kind: file_type(e.kind),
                attr: e.attr.as_ref().map(|a| self.view(a)),
                name: e.name,
            });
        }
        Ok(out)
    }

    /// Entries with cookies above `after`: from the cached page when it
    /// covers them, else one Readdir call.
    async fn dir_page(&self, caller: pb::Caller, ino: u64, fh: u64, after: u64) -> FsResult<Vec<pb::DirEntry>> {
        if let Some(Some(c)) = locked(&self.dirs).get(&fh) {
            let covers = c.after <= after && (!c.more || c.entries.last().is_some_and(|l| l.cookie > after));
            if covers {
                return Ok(c.entries.iter().filter(|e| e.cookie > after).cloned().collect());
            }
        }
        // Always with attributes: one page serves readdir and readdirplus,
        // and costs the servers one inode read per entry.
        let op = Op::Readdir(pb::ReadDir {
            ino,
            after,
            limit: READDIR_PAGE,
            plus: true,
        });
        let page = match self.call(caller, op).await? {
            R::Dir(p) => p,
            other => return unexpected("Readdir", &other),
        };
        if let Some(c) = locked(&self.dirs).get_mut(&fh) {
            *c = Some(DirCache {
                after,
                entries: page.entries.clone(),
                more: page.more,
            });
        }
        Ok(page.entries)
    }
}

/// A getxattr/listxattr answer for a buffer of `size` bytes (0: a probe).
fn sized(value: Vec<u8>, size: u32) -> FsResult<XattrOut> {
    let len = u32::try_from(value.len()).map_err(|_| FsError(Errno::E2BIG))?;
    if size == 0 {
        Ok(XattrOut::Size(len))
    } else if len > size {
        fail(Errno::ERANGE)
    } else {
        Ok(XattrOut::Data(value))
    }
}

/// A kernel time change as the namespace takes it.
pub fn time_spec(t: fuser::TimeOrNow) -> pb::TimeSpec {
    use pb::time_spec::Value;
    pb::TimeSpec {
        value: Some(match t {
            fuser::TimeOrNow::Now => Value::Now(true),
            fuser::TimeOrNow::SpecificTime(t) => Value::AtNs(convert::setattr_nanos(t)),
        }),
    }
}
