//! The data path of an open file. Writes land in whole-slot buffers (a slot
//! is 4 MiB of the file and one immutable block on the data servers); flush,
//! fsync and release upload every dirty slot as a new block, in parallel, and
//! swap them in with ONE CommitWrite that also sets the size. A slot 0 of at
//! most [`INLINE_MAX`] bytes (a small file) goes inside that command
//! instead, to be kept by the meta cluster: a small file costs no trip to the
//! data servers. chmod, chown and utimens on a file this mount holds open
//! for writing wait for the same command (they are "folded"), so that `cp`
//! and `tar` pay one commit per file at close, and other mounts see data and
//! attributes at the same moment. Reads come from those buffers, else from
//! the committed blocks (through cache.rs's read-ahead) or inline slot 0, and
//! read holes as zeros.
//!
//! Every handle of an inode on this mount shares one [`OpenFile`], so that a
//! truncate or a second descriptor sees the bytes written through the first,
//! as on a local file system.

use super::backend::Backend;
use super::cache::BlockCache;
use super::convert::{fail, FsError, FsResult};
use nimbus_client::blocks::{FileCommit, WrittenBlock};
use nimbus_common::encryption::Key;
use nimbus_common::{BlockId, Errno, Ino};
use nimbus_proto as pb;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::task::JoinSet;

/// Bytes per slot; the meta servers use the same (checked on every layout).
pub const SLOT: u64 = 4 << 20;
/// Dirty slots one file may hold before it uploads and commits them: this
/// bounds the memory of a large sequential write to 64 MiB per file.
const MAX_DIRTY_SLOTS: usize = 16;
/// Largest file size the namespace accepts.
const MAX_SIZE: u64 = i64::MAX as u64;
/// Largest slot 0 committed inline, kept by the meta cluster (its limit).
pub const INLINE_MAX: usize = 64 << 10;
/// Set-user-ID and set-group-ID bits.
const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;

/// A committed slot: its block and how many of its bytes belong to the file.
#[derive(Clone, Copy, Debug)]
struct Committed {
    block: BlockId,
    len: u64,
    /// None for a block stored in the clear (from before encryption at rest).
    key: Option<Key>,
}

/// A range of a committed block that a read needs, and where it goes.
struct Fetch {
    at: usize,
    block: BlockId,
    key: Option<Key>,
    from: u64,
    to: u64,
    slot_len: u64,
}

/// A committed block to load ahead of a sequential reader.
struct Ahead {
    block: BlockId,
    key: Option<Key>,
    len: u64,
}

struct State {
    /// The size as this mount sees it: committed, grown by buffered writes,
    /// cut by truncations.
    size: u64,
    /// The committed layout as of the last open or commit.
    slots: BTreeMap<u64, Committed>,
    /// New contents of whole slots, from the slot's start to its last byte
    /// written or loaded.
    dirty: BTreeMap<u64, Arc<Vec<u8>>>,
    /// Uploads started as soon as a dirty slot filled up, so that a
    /// sequential writer does not wait for them at the next commit; dropped
    /// (aborted) when the slot changes again.
    early: BTreeMap<u64, tokio::task::JoinHandle<Result<WrittenBlock, nimbus_client::ClientError>>>,
    /// Slots committed since the last fsync from blocks the data servers
    /// have not fsync'ed: an fsync asks every replica to sync them (or, if
    /// that fails, uploads them again, durably).
    undurable: BTreeMap<u64, WrittenBlock>,
    /// Slot 0 as the meta cluster keeps it, for a small file (no block).
    inline: Option<Vec<u8>>,
    /// chmod/chown/utimens made on the open file, for the next commit.
    pending: Option<pb::SetAttr>,
    /// Who commits: the last writer, whose right to write was checked when
    /// it opened the file.
    writer: pb::Caller,
    /// A file created here that the cluster does not have yet: its create,
    /// under the inode number this mount reserved, goes with the first
    /// commit (close, fsync), so that a small file costs one command.
    create: Option<pb::MakeNode>,
}

/// Slot buffers the whole mount may hold (4 MiB each): a writer that would
/// go past it commits its own first. Files with nothing buffered still
/// take one slot, so the bound is soft by one slot per writing file.
pub struct WriteBudget {
    used: AtomicUsize,
    limit: usize,
}

impl WriteBudget {
    /// A budget of `bytes` (at least one slot).
    pub fn new(bytes: u64) -> Arc<WriteBudget> {
        Arc::new(WriteBudget {
            used: AtomicUsize::new(0),
            limit: (bytes / SLOT).max(1) as usize,
        })
    }

    fn exhausted(&self) -> bool {
        self.used.load(Ordering::Acquire) >= self.limit
    }
}

/// What this mount knows of one open regular file.
pub struct OpenFile {
    ino: Ino,
    state: tokio::sync::Mutex<State>,
    /// `State::size`, readable by getattr without waiting for an upload.
    size: AtomicU64,
    /// When this mount last wrote to the file (ns since the epoch, 0 for
    /// never): a write changes mtime at once, not only at its commit.
    written_at: AtomicI64,
    cache: BlockCache,
    /// Handles open for writing: attribute changes fold only while one is.
    writers: AtomicUsize,
    /// The attributes as the folded changes made them, until committed.
    folded: std::sync::Mutex<Option<pb::Attr>>,
    /// The attributes last heard from the cluster (open, create, commit).
    known: std::sync::Mutex<Option<pb::Attr>>,
    /// The file has no `security.capability` (known since it was created
    /// here, or asked once): the kernel asks before every write.
    no_capability: std::sync::atomic::AtomicBool,
    /// The uid and primary gid of `State::writer`, readable without the
    /// state's lock: a write by the same user needs no fresh caller.
    writer_id: AtomicU64,
    budget: Arc<WriteBudget>,
    /// Slots of `budget` this file's buffers hold.
    counted: AtomicUsize,
    /// `State::create` is set: the cluster does not have the file yet.
    unborn: std::sync::atomic::AtomicBool,
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        // Buffers dropped after a failed close give their room back.
        self.budget.used.fetch_sub(*self.counted.get_mut(), Ordering::AcqRel);
    }
}

/// What a setattr on an open file became.
pub enum SetOutcome {
    /// Folded into the next commit: these are the attributes now.
    Folded(pb::Attr),
    /// Sent to the cluster, which answered with these.
    Applied(pb::Attr),
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `into` with the changes of `more` laid over it.
fn merge(into: &mut pb::SetAttr, more: &pb::SetAttr) {
    into.perm = more.perm.or(into.perm);
    into.uid = more.uid.or(into.uid);
    into.gid = more.gid.or(into.gid);
    into.atime = more.atime.or(into.atime);
    into.mtime = more.mtime.or(into.mtime);
}

/// Nanoseconds a TimeSpec sets, with "now" as `now`.
fn time_of(t: &pb::TimeSpec, now: i64) -> i64 {
    match t.value {
        Some(pb::time_spec::Value::AtNs(ns)) => ns,
        _ => now,
    }
}

impl OpenFile {
    /// A file with no known contents yet: call [`OpenFile::refresh`] (or
    /// nothing, for a file just created).
    pub fn new(ino: u64, opener: pb::Caller, budget: Arc<WriteBudget>) -> OpenFile {
        OpenFile {
            ino: Ino(ino),
            state: tokio::sync::Mutex::new(State {
                size: 0,
                slots: BTreeMap::new(),
                dirty: BTreeMap::new(),
                early: BTreeMap::new(),
                undurable: BTreeMap::new(),
                writer: opener.clone(),
                inline: None,
                pending: None,
                create: None,
            }),
            size: AtomicU64::new(0),
            written_at: AtomicI64::new(0),
            cache: BlockCache::default(),
            writers: AtomicUsize::new(0),
            folded: std::sync::Mutex::new(None),
            known: std::sync::Mutex::new(None),
            no_capability: std::sync::atomic::AtomicBool::new(false),
            writer_id: AtomicU64::new(writer_id(&opener)),
            budget,
            counted: AtomicUsize::new(0),
            unborn: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The file's inode number.
    pub fn ino(&self) -> u64 {
        self.ino.0
    }

    /// Makes this new file one the cluster creates with its first commit
    /// (`node` names the reserved inode number and the session).
    pub async fn create_with_first_commit(&self, node: pb::MakeNode) {
        let mut st = self.state.lock().await;
        st.create = Some(node);
        self.unborn.store(true, Ordering::Release);
    }

    /// Whether the cluster does not have this file yet (created here, not
    /// committed).
    pub fn is_unborn(&self) -> bool {
        self.unborn.load(Ordering::Acquire)
    }

    /// Creates the file in the cluster now, empty, if it is not there yet:
    /// before its blocks go to the data servers, or before a change the
    /// cluster must apply to an existing file.
    async fn be_born<C: Backend>(&self, st: &mut State, client: &Arc<C>) -> FsResult<()> {
        let Some(node) = st.create.clone() else {
            return Ok(());
        };
        let commit = FileCommit {
            create: Some(node),
            ..FileCommit::default()
        };
        let a = client.commit(st.writer.clone(), self.ino, commit).await?;
        st.create = None;
        self.unborn.store(false, Ordering::Release);
        self.known(&a);
        Ok(())
    }

    /// Brings this file's share of the mount's write budget in line with
    /// its buffers.
    fn recount(&self, st: &State) {
        let now = st.dirty.len();
        let before = self.counted.swap(now, Ordering::AcqRel);
        if now > before {
            self.budget.used.fetch_add(now - before, Ordering::AcqRel);
        } else {
            self.budget.used.fetch_sub(before - now, Ordering::AcqRel);
        }
    }

    /// A digest of the committed contents as this mount knows them (size,
    /// slot blocks, inline bytes): equal digests at two opens mean nobody
    /// committed in between, so the kernel's cached pages are still right.
    pub async fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let st = self.state.lock().await;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        st.size.hash(&mut h);
        for (slot, c) in &st.slots {
            (slot, c.block.0, c.len).hash(&mut h);
        }
        st.inline.hash(&mut h);
        st.dirty.len().hash(&mut h);
        h.finish()
    }

    /// Whether the file is known to have no `security.capability`.
    pub fn has_no_capability(&self) -> bool {
        self.no_capability.load(Ordering::Acquire)
    }

    /// Records whether the file is known to have no `security.capability`.
    pub fn set_no_capability(&self, known: bool) {
        self.no_capability.store(known, Ordering::Release);
    }

    /// Whether a write by `uid` (primary group `gid`) may commit as the
    /// writer recorded, whose supplementary groups this mount already has.
    pub fn writes_as(&self, uid: u32, gid: u32) -> bool {
        uid == u32::MAX || self.writer_id.load(Ordering::Acquire) == ids(uid, gid)
    }

    /// One more (or, with false, one fewer) handle open for writing.
    pub fn writer(&self, opened: bool) {
        if opened {
            self.writers.fetch_add(1, Ordering::AcqRel);
        } else {
            let _ = self
                .writers
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    /// Records attributes the cluster answered with.
    pub fn known(&self, a: &pb::Attr) {
        *lock(&self.known) = Some(*a);
    }

    /// The attributes last heard from the cluster (or planned, for a file
    /// it does not have yet).
    pub fn known_attr(&self) -> Option<pb::Attr> {
        *lock(&self.known)
    }

    /// The attributes folded changes made, while they wait for a commit.
    pub fn folded(&self) -> Option<pb::Attr> {
        *lock(&self.folded)
    }

    /// When this mount last wrote to the file, in ns since the epoch.
    pub fn written_at(&self) -> i64 {
        self.written_at.load(Ordering::Acquire)
    }

    /// The size including writes not yet committed.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn set_size(&self, st: &mut State, size: u64) {
        st.size = size;
        self.size.store(size, Ordering::Release);
    }

    /// Re-reads the layout and size from the cluster (close-to-open: every
    /// open sees what the last close committed). Buffered writes of other
    /// handles stay.
    /// With `access` (R/W bits), the cluster checks those rights and
    /// answers with the attributes too: an open costs one call.
    pub async fn refresh<C: Backend>(&self, client: &C, caller: pb::Caller, access: u32) -> FsResult<Option<pb::Attr>> {
        let mut st = self.state.lock().await;
        let layout = client.layout(caller, self.ino, access).await?;
        if layout.slot_size != SLOT {
            tracing::error!("the cluster uses {}-byte slots, this client {SLOT}", layout.slot_size);
            return fail(Errno::EIO);
        }
        let mut slots = BTreeMap::new();
        for s in &layout.slots {
            let Some(block) = BlockId::from_bytes(&s.block_id) else {
                tracing::error!("inode {}: slot {} has a malformed block id", self.ino, s.slot);
                return fail(Errno::EIO);
            };
            let key = match s.key.len() {
                0 => None,
                _ => match Key::from_bytes(&s.key) {
                    Some(k) => Some(k),
                    None => {
                        tracing::error!("inode {}: slot {} has a malformed block key", self.ino, s.slot);
                        return fail(Errno::EIO);
                    }
                },
            };
            slots.insert(
                s.slot,
                Committed {
                    block,
                    len: s.length.min(SLOT),
                    key,
                },
            );
        }
        st.slots = slots;
        st.inline = (!layout.inline_data.is_empty()).then_some(layout.inline_data);
        let size = if st.dirty.is_empty() {
            layout.size
        } else {
            st.size.max(layout.size)
        };
        self.set_size(&mut st, size);
        Ok(layout.attr)
    }

    /// Buffers `data` at `offset`, uploading and committing first when too
    /// many slots are dirty.
    /// `writer` is who writes, None for the writer recorded (see
    /// [`OpenFile::writes_as`]).
    pub async fn write<C: Backend>(
        &self,
        client: &Arc<C>,
        writer: Option<pb::Caller>,
        offset: u64,
        data: &[u8],
    ) -> FsResult<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= MAX_SIZE)
            .ok_or(FsError(Errno::EFBIG))?;
        let mut st = self.state.lock().await;
        self.written_at
            .store(super::convert::nanos(std::time::SystemTime::now()), Ordering::Release);
        // A write moves mtime to its own time, whatever utimens set before
        // (even a time in the future): the commit stamps it.
        if let Some(p) = st.pending.as_mut() {
            p.mtime = None;
        }
        // Writes of mmap'ed pages come from the kernel's writeback, with no
        // process behind them (uid -1): they commit as the last real writer.
        if let Some(writer) = writer.filter(|w| w.uid != u32::MAX) {
            self.writer_id.store(writer_id(&writer), Ordering::Release);
            st.writer = writer;
        }
        let mut pos = offset;
        while pos < end {
            let slot = pos / SLOT;
            let in_slot = pos % SLOT;
            let n = (SLOT - in_slot).min(end - pos);
            if !st.dirty.contains_key(&slot) {
                let mount_full = self.budget.exhausted() && !st.dirty.is_empty();
                if st.dirty.len() >= MAX_DIRTY_SLOTS || mount_full {
                    self.commit(&mut st, client, false).await?;
                }
                let base = slot_base(&st, client.as_ref(), slot, in_slot, n).await?;
                st.dirty.insert(slot, Arc::new(base));
                self.recount(&st);
            }
            // The slot changes: an upload of its earlier bytes is void.
            if let Some(upload) = st.early.remove(&slot) {
                upload.abort();
            }
            let src = &data[(pos - offset) as usize..][..n as usize];
            let (a, b) = (in_slot as usize, (in_slot + n) as usize);
            if let Some(buf) = st.dirty.get_mut(&slot) {
                let buf = Arc::make_mut(buf);
                if buf.len() < b {
                    // Most writes append: reserve the whole slot once rather
                    // than doubling (and copying) the buffer on the way.
                    if b > 64 << 10 && buf.capacity() < SLOT as usize {
                        buf.reserve_exact(SLOT as usize - buf.len());
                    }
                    buf.resize(b, 0);
                }
                buf[a..b].copy_from_slice(src);
            }
            pos += n;
            // Grown piece by piece: a commit forced by the next slot must
            // not cut off what this write put in the previous one.
            let size = st.size.max(pos);
            self.set_size(&mut st, size);
            // Written up to its end, the slot is most likely done: send it
            // now, while the writer fills the next one.
            if b as u64 == SLOT {
                // Blocks belong to a file the cluster has.
                self.be_born(&mut st, client).await?;
                if let Some(buf) = st.dirty.get(&slot).filter(|buf| buf.len() as u64 == SLOT) {
                    let (client, data, ino) = (client.clone(), buf.clone(), self.ino);
                    let upload = tokio::spawn(async move { client.write_block(ino, &data, false).await });
                    st.early.insert(slot, upload);
                }
            }
        }
        Ok(())
    }

    /// Up to `len` bytes at `offset`, clipped at the size.
    pub async fn read<C: Backend>(&self, client: &Arc<C>, offset: u64, len: u32) -> FsResult<Vec<u8>> {
        let sequential = self.cache.sequential(offset);
        let mut fetches = Vec::new();
        let mut ahead = Vec::new();
        let mut out;
        {
            let st = self.state.lock().await;
            if offset >= st.size {
                return Ok(Vec::new());
            }
            let end = offset.saturating_add(u64::from(len)).min(st.size);
            out = vec![0u8; (end - offset) as usize];
            let mut pos = offset;
            while pos < end {
                let slot = pos / SLOT;
                let in_slot = pos % SLOT;
                let n = (SLOT - in_slot).min(end - pos);
                let at = (pos - offset) as usize;
                if let Some(buf) = st.dirty.get(&slot) {
                    let from = (in_slot as usize).min(buf.len());
                    let to = ((in_slot + n) as usize).min(buf.len());
                    out[at..at + (to - from)].copy_from_slice(&buf[from..to]);
                } else if let (0, Some(data)) = (slot, st.inline.as_ref()) {
                    let from = (in_slot as usize).min(data.len());
                    let to = ((in_slot + n) as usize).min(data.len());
                    out[at..at + (to - from)].copy_from_slice(&data[from..to]);
                } else if let Some(c) = st.slots.get(&slot) {
                    if in_slot < c.len {
                        fetches.push(Fetch {
                            at,
                            block: c.block,
                            key: c.key,
                            from: in_slot,
                            to: (in_slot + n).min(c.len),
                            slot_len: c.len,
                        });
                    }
                }
                pos += n;
            }
            // A sequential reader will want the next slots soon: two
            // fetches in flight, three past the middle of a slot, keep the
            // data servers busy while the reader decrypts and copies (one
            // or two left the cores a quarter idle: 195-207 -> 216-234
            // MiB/s cold, bench/results/seqread-readahead-ab-*).
            let last = end - 1;
            if sequential {
                let cur = last / SLOT;
                let depth = if last % SLOT >= SLOT / 2 { 3 } else { 2 };
                for next in cur + 1..=cur + depth {
                    if let (Some(c), false) = (st.slots.get(&next), st.dirty.contains_key(&next)) {
                        ahead.push(Ahead {
                            block: c.block,
                            key: c.key,
                            len: c.len,
                        });
                    }
                }
            }
            self.cache.read_to(end);
        }
        for a in ahead {
            self.cache.prefetch(client, a.block, a.key, a.len);
        }
        // Blocks are immutable: fetching after the lock is released reads
        // exactly what the layout named, even if a commit replaces it now.
        for f in fetches {
            let bytes = self
                .cache
                .read(client.as_ref(), f.block, f.key, f.slot_len, (f.from, f.to), sequential)
                .await?;
            out[f.at..f.at + bytes.len()].copy_from_slice(&bytes);
        }
        Ok(out)
    }

    /// Uploads and commits buffered writes (flush and close).
    pub async fn flush<C: Backend>(&self, client: &Arc<C>) -> FsResult<()> {
        let mut st = self.state.lock().await;
        self.commit(&mut st, client, false).await
    }

    /// Like [`OpenFile::flush`], with every replica fsync'ed, including the
    /// slots earlier commits of this file left unsynced.
    pub async fn fsync<C: Backend>(&self, client: &Arc<C>) -> FsResult<()> {
        let mut st = self.state.lock().await;
        self.commit(&mut st, client, true).await?;
        if st.undurable.is_empty() {
            return Ok(());
        }
        let blocks: Vec<&WrittenBlock> = st.undurable.values().collect();
        match client.sync_blocks(&blocks).await {
            Ok(()) => {
                st.undurable.clear();
                return Ok(());
            }
            Err(e) => tracing::info!("inode {}: syncing written blocks: {e}; sending them again", self.ino),
        }
        let pending: Vec<u64> = st.undurable.keys().copied().collect();
        for batch in pending.chunks(MAX_DIRTY_SLOTS) {
            for slot in batch {
                match st.slots.get(slot).copied() {
                    Some(c) if c.len > 0 => {
                        let mut data = client.read_block(c.block, c.key.as_ref(), 0, c.len).await?;
                        data.resize(c.len as usize, 0);
                        st.dirty.insert(*slot, Arc::new(data));
                    }
                    _ => {
                        st.undurable.remove(slot);
                    }
                }
            }
            self.commit(&mut st, client, true).await?;
        }
        Ok(())
    }

    /// Applies `change`, all under the file's lock so that no write or
    /// commit slips in between: folded into the next commit when `who` may
    /// surely make it (see [`OpenFile::fold`]), else sent with `set` after
    /// what is pending. A new mtime first commits the buffered writes, or
    /// their commit would stamp its own time over it. A new size cuts the
    /// buffers and the layout as the cluster does.
    pub async fn set_attr<C: Backend, F>(
        &self,
        client: &Arc<C>,
        change: &pb::SetAttr,
        who: Who,
        set: F,
    ) -> FsResult<SetOutcome>
    where
        F: Future<Output = FsResult<pb::Attr>>,
    {
        let mut st = self.state.lock().await;
        if let Some(attr) = self.fold(&mut st, change, who) {
            return Ok(SetOutcome::Folded(attr));
        }
        if st.pending.is_some() || change.mtime.is_some() || st.create.is_some() {
            self.commit(&mut st, client, false).await?;
        }
        if change.mtime.is_some() {
            // An explicit mtime wins over the time of earlier writes.
            self.written_at.store(0, Ordering::Release);
        }
        let attr = set.await?;
        if let Some(size) = change.size {
            let keep = size.div_ceil(SLOT);
            st.dirty.split_off(&keep);
            for (_, upload) in st.early.split_off(&(size / SLOT)) {
                upload.abort();
            }
            if !size.is_multiple_of(SLOT) {
                if let Some(buf) = st.dirty.get_mut(&(size / SLOT)) {
                    Arc::make_mut(buf).truncate((size % SLOT) as usize);
                }
            }
            if let Some(data) = st.inline.as_mut() {
                data.truncate(size.min(data.len() as u64) as usize);
            }
            st.undurable.split_off(&keep);
            clip(&mut st.slots, size);
            self.set_size(&mut st, size);
            self.recount(&st);
        }
        self.known(&attr);
        Ok(SetOutcome::Applied(attr))
    }

    /// Folds `change` into the next commit if the cluster will surely allow
    /// it there: the file is open for writing here, the change sets no size,
    /// `who` is the one who commits and owns the file (or is the superuser),
    /// and it gives nothing away (no chown or chgrp to others, no set-id
    /// bits) unless `who` is the superuser. A chown that changes nothing is
    /// dropped. Returns the attributes as they now are.
    fn fold(&self, st: &mut State, change: &pb::SetAttr, who: Who) -> Option<pb::Attr> {
        if change.size.is_some() || self.writers.load(Ordering::Acquire) == 0 || who.uid != st.writer.uid {
            return None;
        }
        let base = self.folded().or(*lock(&self.known))?;
        if !who.superuser && who.nimbus_uid != base.uid {
            return None;
        }
        let owner_changes = change.uid.is_some_and(|u| u != base.uid) || change.gid.is_some_and(|g| g != base.gid);
        let setid = change.perm.is_some_and(|p| p & (S_ISUID | S_ISGID) != 0);
        if !who.superuser && (owner_changes || setid) {
            return None;
        }
        let pending = st.pending.unwrap_or_default();
        // The cluster applies a chmod before a chown: a chown after a
        // pending set-id chmod, or a set-id chmod after a pending chown,
        // must go in order.
        let chown = change.uid.is_some() || change.gid.is_some();
        let kills_setid = chown && base.kind == pb::FileKind::Regular as i32;
        if (kills_setid && pending.perm.is_some_and(|p| p & (S_ISUID | S_ISGID) != 0))
            || (setid && (pending.uid.is_some() || pending.gid.is_some()))
        {
            return None;
        }
        let mut a = base;
        let now = super::convert::nanos(std::time::SystemTime::now());
        let noop_chown = chown && !owner_changes && base.perm & (S_ISUID | S_ISGID) == 0;
        let mut merged = pending;
        let mut change = *change;
        if noop_chown {
            change.uid = None;
            change.gid = None;
        }
        merge(&mut merged, &change);
        if let Some(p) = change.perm {
            a.perm = p & 0o7777;
        }
        if change.uid.is_some() || change.gid.is_some() {
            a.uid = change.uid.unwrap_or(a.uid);
            a.gid = change.gid.unwrap_or(a.gid);
            if kills_setid {
                a.perm &= !S_ISUID;
                if a.perm & 0o010 != 0 {
                    a.perm &= !S_ISGID;
                }
            }
        }
        if let Some(t) = &change.atime {
            a.atime_ns = time_of(t, now);
        }
        if let Some(t) = &change.mtime {
            a.mtime_ns = time_of(t, now);
            // An explicit mtime wins over the time of earlier writes.
            self.written_at.store(0, Ordering::Release);
        }
        if merged != pb::SetAttr::default() {
            a.ctime_ns = now;
            st.pending = Some(merged);
        }
        *lock(&self.folded) = Some(a);
        Some(a)
    }

    /// Grows the file to `size` with `set` unless it is already that long
    /// (fallocate); buffers and layout stay as they are.
    pub async fn grow<F>(&self, size: u64, set: F) -> FsResult<()>
    where
        F: Future<Output = FsResult<pb::Attr>>,
    {
        let mut st = self.state.lock().await;
        if st.size < size {
            set.await?;
            self.set_size(&mut st, size);
        }
        Ok(())
    }

    /// Uploads every dirty slot in parallel (a small slot 0 goes inline
    /// instead) and commits them with the size and the folded attribute
    /// changes in one command. On failure the buffers stay, for a later
    /// retry; folded changes the cluster refuses are dropped, the data
    /// committed without them, and the refusal returned.
    async fn commit<C: Backend>(&self, st: &mut State, client: &Arc<C>, durable: bool) -> FsResult<()> {
        let r = self.commit_buffers(st, client, durable).await;
        self.recount(st);
        r
    }

    async fn commit_buffers<C: Backend>(&self, st: &mut State, client: &Arc<C>, durable: bool) -> FsResult<()> {
        if st.dirty.is_empty() && st.pending.is_none() && st.create.is_none() {
            return Ok(());
        }
        // A file whose contents need blocks is created on its own first:
        // blocks are allocated for a file the cluster has.
        let inline_only = st.early.is_empty()
            && st.dirty.keys().all(|slot| *slot == 0)
            && st.dirty.get(&0).is_none_or(|b| b.len() <= INLINE_MAX);
        if !inline_only {
            self.be_born(st, client).await?;
        }
        let started = std::time::Instant::now();
        let inline = match st.dirty.get(&0) {
            Some(b) if b.len() <= INLINE_MAX => st
                .dirty
                .remove(&0)
                .map(|b| Arc::try_unwrap(b).unwrap_or_else(|shared| (*shared).clone())),
            _ => None,
        };
        let mut uploads = JoinSet::new();
        for (slot, data) in std::mem::take(&mut st.dirty) {
            let client = client.clone();
            let ino = self.ino;
            let early = st.early.remove(&slot);
            uploads.spawn(async move {
                // A full slot sent early: its upload is this one, unless it
                // failed; it was not durable (fsync syncs it afterwards).
                if let Some(Ok(Ok(block))) = match early {
                    Some(upload) => Some(upload.await),
                    None => None,
                } {
                    return (slot, data, Ok(block), false);
                }
                let r = client.write_block(ino, &data, durable).await;
                (slot, data, r, durable)
            });
        }
        for (_, upload) in std::mem::take(&mut st.early) {
            upload.abort();
        }
        let mut written = Vec::new();
        let mut failed = None;
        while let Some(joined) = uploads.join_next().await {
            match joined {
                Ok((slot, data, r, synced)) => {
                    match r {
                        Ok(block) => written.push((slot, block, synced)),
                        Err(e) => failed = Some(FsError::from(e)),
                    }
                    st.dirty.insert(slot, data);
                }
                Err(e) => {
                    // The buffer went down with the task: nothing to retry.
                    tracing::error!("inode {}: an upload task failed: {e}", self.ino);
                    failed = Some(FsError(Errno::EIO));
                }
            }
        }
        if let Some(e) = failed {
            if let Some(data) = inline {
                st.dirty.insert(0, Arc::new(data));
            }
            return Err(e);
        }
        let uploaded = started.elapsed();
        let count = written.len();
        let refs: Vec<(u64, &WrittenBlock)> = written.iter().map(|(slot, b, _)| (*slot, b)).collect();
        let mut attrs = st.pending;
        let committed = loop {
            let commit = FileCommit {
                slots: &refs,
                size: st.size,
                inline: inline.clone(),
                attrs,
                create: st.create.clone(),
            };
            match client.commit(st.writer.clone(), self.ino, commit).await {
                Ok(a) => break Ok(a),
                Err(e) if attrs.is_some() && matches!(e.errno(), Errno::EPERM | Errno::EACCES | Errno::EINVAL) => {
                    tracing::warn!(
                        "inode {}: attribute changes made while open refused at close: {e}",
                        self.ino
                    );
                    // The data must not go down with them: commit it alone,
                    // then report the refusal.
                    attrs = None;
                    st.pending = None;
                    *lock(&self.folded) = None;
                    if written.is_empty() && inline.is_none() && st.create.is_none() {
                        break Err(FsError::from(e));
                    }
                    failed = Some(FsError::from(e));
                }
                Err(e) => break Err(FsError::from(e)),
            }
        };
        let attr = match committed {
            Ok(a) => a,
            Err(e) => {
                if let Some(data) = inline {
                    st.dirty.insert(0, Arc::new(data));
                }
                return Err(e);
            }
        };
        st.pending = None;
        st.create = None;
        self.unborn.store(false, Ordering::Release);
        *lock(&self.folded) = None;
        self.known(&attr);
        // The cluster stamped the commit's time: show it from now on.
        self.written_at.store(0, Ordering::Release);
        for (slot, b, synced) in written {
            st.dirty.remove(&slot);
            if slot == 0 {
                st.inline = None;
            }
            st.slots.insert(
                slot,
                Committed {
                    block: b.id,
                    len: b.len,
                    key: b.key,
                },
            );
            if synced {
                st.undurable.remove(&slot);
            } else {
                st.undurable.insert(slot, b);
            }
        }
        if let Some(data) = inline {
            // Kept by the meta cluster, durable with the commit itself.
            st.slots.remove(&0);
            st.undurable.remove(&0);
            st.inline = (!data.is_empty()).then_some(data);
        }
        // The cluster drops whatever lies past the committed size.
        let size = st.size;
        clip(&mut st.slots, size);
        tracing::debug!(
            "inode {}: {count} slot(s) uploaded in {uploaded:?}, committed at size {size} in {:?}",
            self.ino,
            started.elapsed() - uploaded
        );
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Who makes an attribute change, for [`OpenFile::set_attr`] to decide
/// whether the cluster will surely allow it.
#[derive(Clone, Copy, Debug)]
pub struct Who {
    /// The requesting process's uid as the mount sends it.
    pub uid: u32,
    /// The Nimbus uid the cluster will see.
    pub nimbus_uid: u32,
    pub superuser: bool,
}

/// What a slot holds before a write of `n` bytes at `in_slot` into it: empty
/// if nothing is committed there or the write covers all of it, else its
/// committed bytes, so that the upload is the slot's whole new content.
/// A uid and a primary gid in one word.
fn ids(uid: u32, gid: u32) -> u64 {
    u64::from(uid) << 32 | u64::from(gid)
}

/// A caller's uid and primary gid in one word.
fn writer_id(c: &pb::Caller) -> u64 {
    ids(c.uid, c.gids.first().copied().unwrap_or(u32::MAX))
}

async fn slot_base<C: Backend>(st: &State, client: &C, slot: u64, in_slot: u64, n: u64) -> FsResult<Vec<u8>> {
    let mut buf = Vec::new();
    if let (0, Some(data)) = (slot, st.inline.as_ref()) {
        if !(in_slot == 0 && n >= data.len() as u64) {
            buf.extend_from_slice(data);
        }
        return Ok(buf);
    }
    if let Some(c) = st.slots.get(&slot) {
        if c.len > 0 && !(in_slot == 0 && n >= c.len) {
            let data = client.read_block(c.block, c.key.as_ref(), 0, c.len).await?;
            buf.reserve_exact(SLOT as usize);
            buf.extend_from_slice(&data[..data.len().min(c.len as usize)]);
            buf.resize(c.len as usize, 0);
        }
    }
    Ok(buf)
}

/// Drops the slots wholly past `size` and shortens the one it cuts, as the
/// meta servers do on a commit or truncate.
fn clip(slots: &mut BTreeMap<u64, Committed>, size: u64) {
    slots.split_off(&size.div_ceil(SLOT));
    if !size.is_multiple_of(SLOT) {
        if let Some(c) = slots.get_mut(&(size / SLOT)) {
            c.len = c.len.min(size % SLOT);
        }
    }
}

#[cfg(test)]
mod tests;
