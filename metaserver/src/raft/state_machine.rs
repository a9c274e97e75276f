//! The replicated state machine: the namespace, its applied log id and
//! membership, kept in the State tree; snapshots of it in files
//! ([`super::snapshots`]), built from a checkpoint of the store and installed
//! by streaming, so that neither ever holds the namespace in memory.

use super::snapshots::{Meta, SnapshotDir, SnapshotFileError, SnapshotReader};
use super::{blocking, storage_error, Request, Response, StorageError, TypeConfig};
use crate::keys::Keys;
use crate::namespace::tables::{decode, encode, RAFT_PREFIX};
use crate::namespace::{apply_batch, Op, Txn};
use crate::store::{Checkpoint, Pair, Store, StoreError, Tree};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, SnapshotMeta, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const APPLIED: &[u8] = b"rapplied";
const MEMBERSHIP: &[u8] = b"rmembership";
/// Where nodes from before snapshot files kept their last snapshot.
const LEGACY_SNAPSHOT: &[u8] = b"current";

/// A snapshot as nodes from before snapshot files kept it in the store.
#[derive(Serialize, Deserialize)]
struct LegacySnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

/// Snapshot figures of this node, for `nimbus status` and the benchmarks.
#[derive(Default)]
pub struct SnapshotStats {
    pub built: AtomicU64,
    pub installed: AtomicU64,
    /// Milliseconds the last build took.
    pub build_ms: AtomicU64,
    /// Milliseconds the last install took.
    pub install_ms: AtomicU64,
    /// Size of the current snapshot file.
    pub bytes: AtomicU64,
}

/// The state machine handle openraft owns.
pub struct StateMachine {
    store: Arc<dyn Store>,
    /// Told whenever the key ring changes, before any client hears of it.
    keys: Arc<Keys>,
    snapshots: SnapshotDir,
    stats: Arc<SnapshotStats>,
}

fn file_error(e: SnapshotFileError, verb: ErrorVerb) -> StorageError {
    storage_error(e, ErrorSubject::Snapshot(None), verb)
}

impl StateMachine {
    /// A state machine over `store`'s State tree, with snapshot files in
    /// `snapshot_dir`. A snapshot that an older version kept in the store is
    /// moved into a file here.
    pub fn open(
        store: Arc<dyn Store>,
        keys: Arc<Keys>,
        snapshot_dir: &Path,
    ) -> Result<StateMachine, SnapshotFileError> {
        let snapshots = SnapshotDir::open(snapshot_dir)?;
        let stats = Arc::new(SnapshotStats::default());
        if let Some(legacy) = store.get(Tree::Snapshot, LEGACY_SNAPSHOT)? {
            let legacy: LegacySnapshot = decode(LEGACY_SNAPSHOT, &legacy)?;
            let pairs: Vec<Pair> = decode(b"snapshot", &legacy.data)?;
            if snapshots.open_current()?.is_none() {
                snapshots.build(&legacy.meta, pairs.into_iter().map(Ok))?;
            }
            store.apply(Tree::Snapshot, vec![(LEGACY_SNAPSHOT.to_vec(), None)])?;
            store.flush()?;
        }
        if let Some((_, _, bytes)) = snapshots.open_current()? {
            stats.bytes.store(bytes, Ordering::Relaxed);
        }
        Ok(StateMachine {
            store,
            keys,
            snapshots,
            stats,
        })
    }

    /// This node's snapshot figures.
    pub fn stats(&self) -> Arc<SnapshotStats> {
        self.stats.clone()
    }

    /// Hands the key ring as now applied to this node's keys.
    fn observe_keyring(&self) {
        let ring = Txn::new(self.store.as_ref()).keyring();
        match ring
            .map_err(|e| e.to_string())
            .and_then(|r| self.keys.observe(r.as_ref()).map_err(|e| e.to_string()))
        {
            Ok(()) => {}
            // This node cannot serve data keys; its clients are refused and
            // go to another node. A restart with the right key mends it.
            Err(e) => tracing::error!("the cluster's key ring: {e}"),
        }
    }

    fn read<T: serde::de::DeserializeOwned>(&self, tree: Tree, key: &[u8]) -> Result<Option<T>, StorageError> {
        let err = |e| storage_error(e, ErrorSubject::StateMachine, ErrorVerb::Read);
        match self.store.get(tree, key).map_err(err)? {
            None => Ok(None),
            Some(b) => decode(key, &b).map(Some).map_err(err),
        }
    }
}

/// Builds a snapshot file from the checkpoint taken when openraft asked.
pub struct SnapshotBuilder {
    snapshots: SnapshotDir,
    stats: Arc<SnapshotStats>,
    meta: Meta,
    /// The captured state, or why it could not be: an unreadable state must
    /// fail the snapshot, never produce an empty one.
    /// (A mutex only because openraft wants builders `Sync`.)
    checkpoint: Mutex<Option<Result<Checkpoint, StorageError>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let checkpoint = self
            .checkpoint
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| {
                Err(storage_error(
                    "built twice",
                    ErrorSubject::Snapshot(None),
                    ErrorVerb::Read,
                ))
            })?;
        let (snapshots, meta, stats) = (self.snapshots.clone(), self.meta.clone(), self.stats.clone());
        // Written on a blocking thread while the state machine goes on
        // applying: the checkpoint keeps the state it reads unchanged, and
        // was flushed when taken, so the snapshot never gets ahead of the
        // state on disk and the log it replaces can be purged.
        let file = blocking(move || {
            let started = Instant::now();
            let written = snapshots
                .build(&meta, checkpoint)
                .map_err(|e| file_error(e, ErrorVerb::Write))?;
            let ms = started.elapsed().as_millis() as u64;
            stats.built.fetch_add(1, Ordering::Relaxed);
            stats.build_ms.store(ms, Ordering::Relaxed);
            stats.bytes.store(written.bytes, Ordering::Relaxed);
            tracing::info!(
                snapshot = %meta.snapshot_id,
                pairs = written.pairs,
                bytes = written.bytes,
                ms,
                "snapshot built"
            );
            nimbus_common::process::release_free_memory();
            Ok(written.file)
        })
        .await?;
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError> {
        let applied = self.read::<LogId<u64>>(Tree::State, APPLIED)?;
        let membership = self.read(Tree::State, MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        // One atomic store batch for every entry openraft hands over; not
        // flushed here: the log is durable, and a restarted node applies
        // again from the applied id that reached the disk (sled writes its
        // batches in order, so the state on disk is always a prefix). The log
        // is only purged behind a snapshot, which flushes the state first.
        // Applied right here: this is CPU work on sled's cache, and a hop to
        // the blocking pool would cost more than most batches take.
        let store = self.store.as_ref();
        let err = |e| storage_error(e, ErrorSubject::StateMachine, ErrorVerb::Write);
        let mut txn = Txn::new(store);
        let mut responses = Vec::new();
        let mut keyring_changed = false;
        for entry in entries {
            txn.put_raw(APPLIED.to_vec(), Some(encode(&entry.log_id)));
            let response = match &entry.payload {
                EntryPayload::Blank => Response::default(),
                EntryPayload::Normal(Request { time, commands }) => {
                    keyring_changed |= commands.iter().any(|c| matches!(c.op, Op::SetKeyring { .. }));
                    Response {
                        results: apply_batch(&mut txn, *time, commands).map_err(err)?,
                    }
                }
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m.clone());
                    txn.put_raw(MEMBERSHIP.to_vec(), Some(encode(&stored)));
                    Response::default()
                }
            };
            txn.commit_command();
            responses.push(response);
        }
        store.apply(Tree::State, txn.into_writes()).map_err(err)?;
        if keyring_changed {
            self.observe_keyring();
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // The checkpoint is taken here, on the state machine's own task, so
        // that no apply runs between reading the applied id and taking it.
        let state = self.applied_state().await;
        let checkpoint = state.as_ref().map_err(Clone::clone).and_then(|_| {
            self.store
                .checkpoint()
                .map_err(|e| storage_error(e, ErrorSubject::StateMachine, ErrorVerb::Read))
        });
        let (applied, membership) = state.unwrap_or_default();
        let built = self.stats.built.load(Ordering::Relaxed) + 1;
        let snapshot_id = match applied {
            Some(l) => format!("{}-{}-{built}", l.leader_id.term, l.index),
            None => format!("0-0-{built}"),
        };
        SnapshotBuilder {
            snapshots: self.snapshots.clone(),
            stats: self.stats.clone(),
            meta: SnapshotMeta {
                last_log_id: applied,
                last_membership: membership,
                snapshot_id,
            },
            checkpoint: Mutex::new(Some(checkpoint)),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let file = self.snapshots.incoming().map_err(|e| file_error(e, ErrorVerb::Write))?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: Box<tokio::fs::File>) -> Result<(), StorageError> {
        let file = snapshot.into_std().await;
        let (store, snapshots, stats, meta) = (
            self.store.clone(),
            self.snapshots.clone(),
            self.stats.clone(),
            meta.clone(),
        );
        blocking(move || {
            let started = Instant::now();
            let err = |e: SnapshotFileError| file_error(e, ErrorVerb::Write);
            let mut input = file.try_clone().map_err(|e| err(io_error(&snapshots, e)))?;
            std::io::Seek::seek(&mut input, std::io::SeekFrom::Start(0)).map_err(|e| err(io_error(&snapshots, e)))?;
            let reader = SnapshotReader::new(input, &snapshots.current()).map_err(err)?;
            // The snapshot's own metadata is authoritative for Raft's keys.
            let raft_keys = [
                meta.last_log_id.map(|applied| (APPLIED.to_vec(), encode(&applied))),
                Some((MEMBERSHIP.to_vec(), encode(&meta.last_membership))),
            ];
            let mut pairs = reader
                .filter(|p| !matches!(p, Ok((k, _)) if k.first() == Some(&RAFT_PREFIX)))
                .chain(raft_keys.into_iter().flatten().map(Ok));
            store
                .replace_state(&mut pairs)
                .map_err(|e| storage_error(e, ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write))?;
            snapshots.keep_installed(&file).map_err(err)?;
            let ms = started.elapsed().as_millis() as u64;
            stats.installed.fetch_add(1, Ordering::Relaxed);
            stats.install_ms.store(ms, Ordering::Relaxed);
            if let Ok(m) = file.metadata() {
                stats.bytes.store(m.len(), Ordering::Relaxed);
            }
            tracing::info!(snapshot = %meta.snapshot_id, ms, "snapshot installed");
            nimbus_common::process::release_free_memory();
            Ok(())
        })
        .await?;
        self.observe_keyring();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self
            .snapshots
            .open_current()
            .map_err(|e| file_error(e, ErrorVerb::Read))?;
        Ok(current.map(|(meta, file, _)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

fn io_error(snapshots: &SnapshotDir, source: std::io::Error) -> SnapshotFileError {
    SnapshotFileError::Io {
        path: snapshots.current(),
        source,
    }
}

/// A hash of the namespace (Raft's own keys excluded) and its applied index,
/// for comparing replicas.
pub fn digest(store: &dyn Store) -> Result<(Option<u64>, [u8; 32], u64), StoreError> {
    let mut h = blake3::Hasher::new();
    let mut inodes = 0;
    // Page by page: a namespace need not fit in memory.
    let mut start: Vec<u8> = Vec::new();
    loop {
        let page = store.scan(Tree::State, &[], &start, 4096)?;
        let Some((last, _)) = page.last() else { break };
        start = last.clone();
        start.push(0);
        for (k, v) in page {
            if k.first() == Some(&RAFT_PREFIX) {
                continue;
            }
            if k.first() == Some(&b'i') {
                inodes += 1;
            }
            h.update(&(k.len() as u64).to_le_bytes());
            h.update(&k);
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(&v);
        }
    }
    let applied = match store.get(Tree::State, APPLIED)? {
        Some(b) => Some(decode::<LogId<u64>>(APPLIED, &b)?.index),
        None => None,
    };
    Ok((applied, *h.finalize().as_bytes(), inodes))
}
