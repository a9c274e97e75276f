//! The Raft log and vote, durable on disk before openraft hears back.
//!
//! Entries live in [`Segments`] (append-only files, one `fdatasync` per
//! append batch); the vote and the purge point are small files replaced
//! atomically. Nothing here goes through sled: a sled flush writes out the
//! whole database, which made every commit pay for the state machine's pages.

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
use std::sync::{Arc, Mutex};

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
            },
            recovery,
        ))
    }

    /// This node's vote and commit index as openraft last handed them over.
    pub fn mirror(&self) -> Arc<Mirror> {
        self.mirror.clone()
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
        let file = {
            let mut inner = self.lock();
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
            file
        };
        // The fsync runs here, on the Raft core's task, without the lock:
        // readers go on meanwhile, and openraft 0.9 waits for the callback
        // before it does anything else anyway, so a hand-off to another
        // thread would only add two wake-ups. The entries count as persisted
        // only when the callback fires: after the fsync, never before.
        let result = file.sync_data();
        let report = match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        callback.log_io_completed(report);
        result.map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let mut inner = self.lock();
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
