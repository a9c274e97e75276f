//! The Raft log and vote, durable in the store before openraft hears back.

use super::{blocking, storage_error, StorageError, TypeConfig};
use crate::namespace::tables::{decode, encode};
use crate::store::{Store, Tree};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, LogState, RaftLogReader, Vote};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";

/// The log store; clones share the same store (they are the log readers).
#[derive(Clone)]
pub struct LogStore {
    store: Arc<dyn Store>,
}

impl LogStore {
    /// A log store over `store`'s Log and Raft trees.
    pub fn new(store: Arc<dyn Store>) -> LogStore {
        LogStore { store }
    }

    fn read<T: serde::de::DeserializeOwned>(&self, tree: Tree, key: &[u8]) -> Result<Option<T>, StorageError> {
        let read_err = |e| storage_error(e, ErrorSubject::Store, ErrorVerb::Read);
        match self.store.get(tree, key).map_err(read_err)? {
            None => Ok(None),
            Some(bytes) => decode(key, &bytes).map(Some).map_err(read_err),
        }
    }

    /// Writes and flushes, off the async workers.
    async fn write_durably(&self, tree: Tree, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), StorageError> {
        let store = self.store.clone();
        blocking(move || {
            let err = |e| storage_error(e, ErrorSubject::Logs, ErrorVerb::Write);
            store.apply(tree, writes).map_err(err)?;
            store.flush().map_err(err)
        })
        .await
    }

    fn index_keys(&self, from: u64, to_inclusive: u64) -> Result<Vec<Vec<u8>>, StorageError> {
        let rows = self
            .store
            .scan(Tree::Log, &[], &from.to_be_bytes(), usize::MAX)
            .map_err(|e| storage_error(e, ErrorSubject::Logs, ErrorVerb::Read))?;
        Ok(rows
            .into_iter()
            .map(|(k, _)| k)
            .take_while(|k| index_of(k).is_some_and(|i| i <= to_inclusive))
            .collect())
    }
}

fn index_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let rows = self
            .store
            .scan(Tree::Log, &[], &start.to_be_bytes(), usize::MAX)
            .map_err(|e| storage_error(e, ErrorSubject::Logs, ErrorVerb::Read))?;
        let mut out = Vec::new();
        for (k, v) in rows {
            let Some(index) = index_of(&k) else { break };
            if !range.contains(&index) {
                break;
            }
            out.push(decode(&k, &v).map_err(|e| storage_error(e, ErrorSubject::Logs, ErrorVerb::Read))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId<u64>> = self.read(Tree::Raft, PURGED)?;
        let last = match self
            .store
            .last(Tree::Log, &[])
            .map_err(|e| storage_error(e, ErrorSubject::Logs, ErrorVerb::Read))?
        {
            Some((k, v)) => {
                let e: Entry<TypeConfig> =
                    decode(&k, &v).map_err(|e| storage_error(e, ErrorSubject::Logs, ErrorVerb::Read))?;
                Some(e.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        // A vote must be on disk before it is sent, or a restarted node could
        // vote twice in one term.
        self.write_durably(Tree::Raft, vec![(VOTE.to_vec(), Some(encode(vote)))])
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.read(Tree::Raft, VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError> {
        // Not flushed: losing it only means re-learning the commit index.
        self.store
            .apply(Tree::Raft, vec![(COMMITTED.to_vec(), Some(encode(&committed)))])
            .map_err(|e| storage_error(e, ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError> {
        Ok(self.read::<Option<LogId<u64>>>(Tree::Raft, COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let writes = entries
            .into_iter()
            .map(|e| (e.log_id.index.to_be_bytes().to_vec(), Some(encode(&e))))
            .collect();
        // openraft counts an entry as persisted only when the callback fires:
        // after the fsync, never before.
        let result = self.write_durably(Tree::Log, writes).await;
        callback.log_io_completed(
            result
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
        result
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let keys = self.index_keys(log_id.index, u64::MAX)?;
        self.write_durably(Tree::Log, keys.into_iter().map(|k| (k, None)).collect())
            .await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        // Record the purge point first: a crash between the two writes then
        // leaves extra entries, never a log state that claims missing ones.
        self.write_durably(Tree::Raft, vec![(PURGED.to_vec(), Some(encode(&log_id)))])
            .await?;
        let keys = self.index_keys(0, log_id.index)?;
        self.write_durably(Tree::Log, keys.into_iter().map(|k| (k, None)).collect())
            .await
    }
}
