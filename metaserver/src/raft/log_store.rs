//! The Raft log and vote, durable on disk before openraft hears back.
//!
//! Entries live in [`Segments`] (append-only files, one `fdatasync` per
//! append batch); the vote and the purge point are small files replaced
//! atomically. Nothing here goes through sled: a sled flush writes out the
//! whole database, which made every commit pay for the state machine's pages.
//!
//! A follower's append is fsynced before openraft hears back. The leader's
//! own appends are answered once written, and fsynced by a flusher thread
//! while openraft replicates them: [`super::durable`] says why that keeps
//! every commit on a majority's disks.

use super::durable::{EarlyAck, Synced};
use super::lease::Mirror;
use super::segments::{read_small_file, write_small_file, Recovery, SegmentError, Segments};
use super::{storage_error, StorageError, TypeConfig};
use crate::store::{Store, Tree};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, LogState, RaftLogReader, Vote};
use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

const VOTE_FILE: &str = "vote";
const PURGED_FILE: &str = "purged";
/// Recent entries kept decoded, so that replication and apply of what was
/// just appended read no file and decode nothing.
const CACHE_ENTRIES: usize = 4096;
const CACHE_BYTES: usize = 32 << 20;

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error("Raft log {what} in {dir} cannot be decoded: {detail}")]
    Decode { dir: PathBuf, what: String, detail: String },
    #[error("importing the Raft log kept in sled: {0}")]
    Import(String),
}

struct Inner {
    dir: PathBuf,
    segments: Segments,
    vote: Option<Vote<u64>>,
    purged: Option<LogId<u64>>,
    last: Option<LogId<u64>>,
    /// Decoded entries `cache_first ..` with their encoded sizes.
    cache: VecDeque<(Entry<TypeConfig>, usize)>,
    cache_first: u64,
    cache_bytes: usize,
    /// Bumped by every truncation: a flush that began before one must not
    /// vouch for the entries written after it.
    generation: u64,
    /// Set when a background fdatasync failed: nothing more is appended.
    failed: Option<String>,
}

/// The log store; clones share the same log (they are the log readers).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    /// The vote and commit index for leased reads, apart from `inner`,
    /// which an append holds through its fdatasync.
    mirror: Arc<Mirror>,
    /// Bytes of entries appended since the process started: the snapshot
    /// policy weighs the log written against the snapshot it would replace.
    appended: Arc<AtomicU64>,
    /// How far the log is on disk.
    synced: Synced,
    early: Arc<EarlyAck>,
    /// The flusher thread's wake-up, started by the first early answer.
    flusher: Arc<OnceLock<Arc<FlushRequests>>>,
    /// Fault injection for tests: milliseconds to hold back each fdatasync
    /// of this node's own entries as leader.
    sync_delay_ms: Arc<AtomicU64>,
}

/// Sleeps for the injected delay, if any (tests only set one).
fn injected_delay(delay_ms: &AtomicU64) {
    let delay = delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        std::thread::sleep(Duration::from_millis(delay));
    }
}

/// Wakes the flusher thread.
#[derive(Default)]
struct FlushRequests {
    pending: Mutex<bool>,
    ready: Condvar,
}

impl FlushRequests {
    fn request(&self) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.ready.notify_one();
    }
}

/// fdatasyncs whatever the leader appended since the last round, then moves
/// [`Synced`] on; stops once the log store is gone.
fn run_flusher(inner: Weak<Mutex<Inner>>, requests: Arc<FlushRequests>, synced: Synced, delay_ms: Arc<AtomicU64>) {
    let lock = |i: &Arc<Mutex<Inner>>| -> Option<(Arc<std::fs::File>, u64, u64)> {
        let i = i.lock().unwrap_or_else(|p| p.into_inner());
        i.failed
            .is_none()
            .then(|| (i.segments.active_file(), i.segments.next_index(), i.generation))
    };
    loop {
        {
            let mut pending = requests.pending.lock().unwrap_or_else(|p| p.into_inner());
            while !*pending {
                if inner.strong_count() == 0 {
                    return;
                }
                pending = match requests.ready.wait_timeout(pending, Duration::from_secs(1)) {
                    Ok((p, _)) => p,
                    Err(p) => p.into_inner().0,
                };
            }
            *pending = false;
        }
        let Some(store) = inner.upgrade() else { return };
        let Some((file, next, generation)) = lock(&store) else {
            continue;
        };
        drop(store);
        injected_delay(&delay_ms);
        let result = file.sync_data();
        let Some(store) = inner.upgrade() else { return };
        let mut i = store.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) if i.generation == generation => synced.advance(next),
            Ok(()) => {}
            Err(e) => {
                // The entries were answered as written: from now on this node
                // appends nothing and acknowledges no follower's copy of them,
                // so they never count towards a commit.
                tracing::error!(error = %e, dir = %i.dir.display(), "fdatasync of the Raft log failed");
                i.failed = Some(e.to_string());
            }
        }
    }
}

fn decode_entry(dir: &Path, index: u64, bytes: &[u8]) -> Result<Entry<TypeConfig>, LogStoreError> {
    postcard::from_bytes(bytes).map_err(|e| LogStoreError::Decode {
        dir: dir.to_path_buf(),
        what: format!("entry {index}"),
        detail: e.to_string(),
    })
}

fn read_record<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Result<Option<T>, LogStoreError> {
    match read_small_file(&dir.join(name))? {
        None => Ok(None),
        Some(b) => postcard::from_bytes(&b).map(Some).map_err(|e| LogStoreError::Decode {
            dir: dir.to_path_buf(),
            what: name.to_owned(),
            detail: e.to_string(),
        }),
    }
}

/// Decodes what an earlier version kept in sled (postcard, as here).
fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, LogStoreError> {
    postcard::from_bytes(bytes).map_err(|e| LogStoreError::Import(format!("{what}: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    postcard::to_allocvec(value).map_err(|e| storage_error(e, ErrorSubject::Logs, ErrorVerb::Write))
}

fn write_err(e: impl std::fmt::Display) -> StorageError {
    storage_error(e, ErrorSubject::Logs, ErrorVerb::Write)
}

fn read_err(e: impl std::fmt::Display) -> StorageError {
    storage_error(e, ErrorSubject::Logs, ErrorVerb::Read)
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, cutting off a torn final write.
    pub fn open(dir: &Path) -> Result<(LogStore, Recovery), LogStoreError> {
        std::fs::create_dir_all(dir).map_err(|source| SegmentError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let vote = read_record(dir, VOTE_FILE)?;
        let purged: Option<LogId<u64>> = read_record(dir, PURGED_FILE)?;
        let (segments, recovery) = Segments::open(dir, purged.map(|p| p.index))?;
        // What the log holds may be only in the page cache (a process killed
        // between write and fdatasync): on disk before anyone relies on it.
        segments.sync()?;
        let next = segments.next_index();
        let last = match next.checked_sub(1) {
            Some(i) if i >= segments.first_index() && purged.is_none_or(|p| p.index < i) => {
                Some(decode_entry(dir, i, &segments.read(i)?)?.log_id)
            }
            _ => purged,
        };
        let inner = Inner {
            dir: dir.to_path_buf(),
            segments,
            vote,
            purged,
            last,
            cache: VecDeque::new(),
            cache_first: next,
            cache_bytes: 0,
            generation: 0,
            failed: None,
        };
        let mirror = Arc::new(Mirror::default());
        if let Some(v) = vote {
            mirror.set_vote(v);
        }
        Ok((
            LogStore {
                inner: Arc::new(Mutex::new(inner)),
                mirror,
                appended: Arc::default(),
                synced: Synced::new(next),
                early: Arc::default(),
                flusher: Arc::default(),
                sync_delay_ms: Arc::default(),
            },
            recovery,
        ))
    }

    /// This node's vote and commit index as openraft last handed them over.
    pub fn mirror(&self) -> Arc<Mirror> {
        self.mirror.clone()
    }

    /// How far the log is on disk.
    pub fn synced(&self) -> Synced {
        self.synced.clone()
    }

    /// When this node's own appends may be answered before their fdatasync.
    pub fn early_ack(&self) -> Arc<EarlyAck> {
        self.early.clone()
    }

    /// Fault injection for tests: holds back every fdatasync of this node's
    /// own entries as leader by `delay` (commits must wait for it).
    pub fn delay_background_syncs(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.sync_delay_ms.store(ms, Ordering::Relaxed);
    }

    fn request_flush(&self) {
        let requests = self.flusher.get_or_init(|| {
            let requests = Arc::new(FlushRequests::default());
            let (inner, r, synced) = (Arc::downgrade(&self.inner), requests.clone(), self.synced.clone());
            let delay_ms = self.sync_delay_ms.clone();
            if let Err(e) = std::thread::Builder::new()
                .name("raft-log-flush".into())
                .spawn(move || run_flusher(inner, r, synced, delay_ms))
            {
                // Without the thread nothing moves `synced` on: commits stall
                // (and say so) rather than count unsynced entries.
                tracing::error!(error = %e, "cannot start the Raft log's flusher thread");
            }
            requests
        });
        requests.request();
    }

    /// The count of bytes appended since the process started.
    pub fn appended(&self) -> Arc<AtomicU64> {
        self.appended.clone()
    }

    /// Moves a log that earlier versions kept in sled's `log` and `raft`
    /// trees into this (empty) log, so that existing nodes keep their state.
    pub fn import_from(&self, store: &dyn Store) -> Result<(), LogStoreError> {
        let import = |e: &dyn std::fmt::Display| LogStoreError::Import(e.to_string());
        let mut inner = self.lock();
        let fresh = inner.vote.is_none() && inner.last.is_none();
        let old_vote = store.get(Tree::Raft, b"vote").map_err(|e| import(&e))?;
        if !fresh || old_vote.is_none() {
            return Ok(());
        }
        let purged: Option<LogId<u64>> = match store.get(Tree::Raft, b"purged").map_err(|e| import(&e))? {
            Some(b) => Some(decode("purged", &b)?),
            None => None,
        };
        if let Some(p) = purged {
            write_small_file(&inner.dir.join(PURGED_FILE), &encode(&p).map_err(|e| import(&e))?)?;
            inner.segments.drop_segments_upto(p.index)?;
            inner.purged = Some(p);
            inner.last = Some(p);
        }
        let rows = crate::store::scan_all(store, Tree::Log).map_err(|e| import(&e))?;
        for (key, value) in rows {
            let entry: Entry<TypeConfig> = decode("entry", &value)?;
            if purged.is_some_and(|p| entry.log_id.index <= p.index) {
                continue;
            }
            if entry.log_id.index != inner.segments.next_index() {
                return Err(import(&format!(
                    "entry under key {key:?} has index {}, expected {}",
                    entry.log_id.index,
                    inner.segments.next_index()
                )));
            }
            inner.segments.append([(entry.log_id.index, value.as_slice())])?;
            inner.last = Some(entry.log_id);
        }
        inner.segments.sync()?;
        inner.cache_first = inner.segments.next_index();
        self.synced.advance(inner.segments.next_index());
        if let Some(v) = old_vote {
            let vote: Vote<u64> = decode("vote", &v)?;
            write_small_file(&inner.dir.join(VOTE_FILE), &v)?;
            inner.vote = Some(vote);
            self.mirror.set_vote(vote);
        }
        tracing::info!(last = ?inner.last, "moved the Raft log out of sled into segment files");
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn entry(&self, index: u64) -> Result<Entry<TypeConfig>, StorageError> {
        if index >= self.cache_first {
            if let Some((e, _)) = self.cache.get((index - self.cache_first) as usize) {
                return Ok(e.clone());
            }
        }
        let bytes = self.segments.read(index).map_err(read_err)?;
        decode_entry(&self.dir, index, &bytes).map_err(read_err)
    }

    fn evict(&mut self) {
        while self.cache.len() > CACHE_ENTRIES || self.cache_bytes > CACHE_BYTES {
            match self.cache.pop_front() {
                Some((_, n)) => {
                    self.cache_bytes -= n;
                    self.cache_first += 1;
                }
                None => break,
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let inner = self.lock();
        let held_from = inner
            .purged
            .map_or(0, |p| p.index + 1)
            .max(inner.segments.first_index());
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        }
        .max(held_from);
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        }
        .min(inner.segments.next_index());
        (start..end).map(|i| inner.entry(i)).collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.lock();
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: inner.last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        // A vote must be on disk before it is sent, or a restarted node could
        // vote twice in one term.
        let bytes = encode(vote)?;
        let mut inner = self.lock();
        write_small_file(&inner.dir.join(VOTE_FILE), &bytes)
            .map_err(|e| storage_error(e, ErrorSubject::Vote, ErrorVerb::Write))?;
        inner.vote = Some(*vote);
        // After the file: once the mirror shows a vote, it is the durable one.
        self.mirror.set_vote(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Ok(self.lock().vote)
    }

    // The commit index is not stored (read_committed keeps openraft's
    // default, None): written ahead of this node's own fsynced log it could
    // point past what a crash left; a restarted node applies again from the
    // state machine's applied index once a leader tells it what is
    // committed. It is only mirrored in memory, for leased reads: openraft
    // calls this before it applies, so before any client hears of a commit.
    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError> {
        if let Some(c) = committed {
            self.mirror.set_committed(c);
        }
        Ok(())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        let mut decoded = Vec::new();
        let mut bytes = 0;
        for e in entries {
            let b = encode(&e)?;
            bytes += b.len() as u64;
            encoded.push((e.log_id.index, b));
            decoded.push(e);
        }
        self.appended.fetch_add(bytes, Ordering::Relaxed);
        let (file, next, early, own) = {
            let mut inner = self.lock();
            if let Some(e) = &inner.failed {
                return Err(write_err(format!("an earlier fdatasync of the Raft log failed: {e}")));
            }
            let early = self.early.allows(inner.vote.as_ref(), &decoded);
            let own = self.early.leads(inner.vote.as_ref());
            let file = inner
                .segments
                .append(encoded.iter().map(|(i, b)| (*i, b.as_slice())))
                .map_err(write_err)?;
            if let Some(e) = decoded.last() {
                inner.last = Some(e.log_id);
            }
            if inner.cache.is_empty() {
                inner.cache_first = encoded.first().map_or(inner.cache_first, |(i, _)| *i);
            }
            for (e, (_, b)) in decoded.into_iter().zip(&encoded) {
                inner.cache_bytes += b.len();
                inner.cache.push_back((e, b.len()));
            }
            inner.evict();
            (file, inner.segments.next_index(), early, own)
        };
        if early {
            // The leader's own entries: openraft may replicate them now; the
            // transport holds back followers' acknowledgements until the
            // flusher has them on disk here (see `durable`).
            callback.log_io_completed(Ok(()));
            self.request_flush();
            return Ok(());
        }
        // A follower's entries count as persisted only when the callback
        // fires: after the fsync, never before. It runs here, on the Raft
        // core's task, without the lock: readers go on meanwhile, and
        // openraft 0.9 waits for the callback before it does anything else.
        // (A single voter's own entries come this way too.)
        if own {
            injected_delay(&self.sync_delay_ms);
        }
        let result = file.sync_data();
        let report = match &result {
            Ok(()) => {
                self.synced.advance(next);
                Ok(())
            }
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        callback.log_io_completed(report);
        result.map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner.generation += 1;
        self.synced.lower(log_id.index);
        inner.segments.truncate_from(log_id.index).map_err(write_err)?;
        while inner.cache_first + inner.cache.len() as u64 > log_id.index {
            match inner.cache.pop_back() {
                Some((_, n)) => inner.cache_bytes -= n,
                None => break,
            }
        }
        if inner.cache.is_empty() {
            inner.cache_first = log_id.index;
        }
        let purged = inner.purged;
        inner.last = match log_id.index.checked_sub(1) {
            Some(prev) if purged.is_none_or(|p| p.index < prev) && prev >= inner.segments.first_index() => {
                Some(inner.entry(prev)?.log_id)
            }
            _ => purged,
        };
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let bytes = encode(&log_id)?;
        let mut inner = self.lock();
        // Record the purge point first: a crash before the segments go then
        // leaves extra entries, which opening drops, never a log state that
        // claims entries it lacks.
        write_small_file(&inner.dir.join(PURGED_FILE), &bytes).map_err(write_err)?;
        inner.purged = Some(log_id);
        inner.segments.drop_segments_upto(log_id.index).map_err(write_err)?;
        while inner.cache_first <= log_id.index {
            match inner.cache.pop_front() {
                Some((_, n)) => {
                    inner.cache_bytes -= n;
                    inner.cache_first += 1;
                }
                None => {
                    inner.cache_first = inner.segments.next_index();
                    break;
                }
            }
        }
        if inner.last.is_none_or(|l| l.index < log_id.index) {
            inner.last = Some(log_id);
        }
        Ok(())
    }
}
