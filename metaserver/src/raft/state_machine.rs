//! The replicated state machine: the namespace, its applied log id and
//! membership, kept in the State tree; snapshots of it in the Snapshot tree.

use super::{blocking, storage_error, Request, Response, StorageError, TypeConfig};
use crate::keys::Keys;
use crate::namespace::tables::{decode, encode, RAFT_PREFIX};
use crate::namespace::{apply_batch, Op, Txn};
use crate::store::{scan_all, Pair, Store, Tree};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, SnapshotMeta, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::Arc;

const APPLIED: &[u8] = b"rapplied";
const MEMBERSHIP: &[u8] = b"rmembership";
const CURRENT_SNAPSHOT: &[u8] = b"current";

/// A snapshot as kept on disk: its metadata and the State tree it captured.
#[derive(Serialize, Deserialize)]
struct SnapshotRecord {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

/// The state machine handle openraft owns.
pub struct StateMachine {
    store: Arc<dyn Store>,
    /// Told whenever the key ring changes, before any client hears of it.
    keys: Arc<Keys>,
    snapshots_built: u64,
}

impl StateMachine {
    /// A state machine over `store`'s State and Snapshot trees.
    pub fn new(store: Arc<dyn Store>, keys: Arc<Keys>) -> StateMachine {
        StateMachine {
            store,
            keys,
            snapshots_built: 0,
        }
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

/// Builds a snapshot from the state captured when openraft asked for it.
pub struct SnapshotBuilder {
    store: Arc<dyn Store>,
    meta: SnapshotMeta<u64, BasicNode>,
    /// The captured state, or why it could not be read: an unreadable state
    /// must fail the snapshot, never produce an empty one.
    pairs: Result<Vec<Pair>, StorageError>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let pairs = std::mem::replace(&mut self.pairs, Ok(Vec::new()))?;
        let data = encode(&pairs);
        let record = SnapshotRecord {
            meta: self.meta.clone(),
            data,
        };
        let bytes = encode(&record);
        let store = self.store.clone();
        // The snapshot and the state it was cut from must be durable before
        // openraft purges the log entries it replaces.
        blocking(move || {
            let err = |e| storage_error(e, ErrorSubject::Snapshot(None), ErrorVerb::Write);
            store
                .apply(Tree::Snapshot, vec![(CURRENT_SNAPSHOT.to_vec(), Some(bytes))])
                .map_err(err)?;
            store.flush().map_err(err)
        })
        .await?;
        Ok(Snapshot {
            meta: record.meta,
            snapshot: Box::new(Cursor::new(record.data)),
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
        // Captured here, on the state machine's own task, so that no apply
        // runs between reading the applied id and reading the data.
        self.snapshots_built += 1;
        let state = self.applied_state().await;
        let pairs = state.as_ref().map_err(Clone::clone).and_then(|_| {
            scan_all(self.store.as_ref(), Tree::State)
                .map_err(|e| storage_error(e, ErrorSubject::StateMachine, ErrorVerb::Read))
        });
        let (applied, membership) = state.unwrap_or_default();
        let snapshot_id = match applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.snapshots_built),
            None => format!("0-0-{}", self.snapshots_built),
        };
        SnapshotBuilder {
            store: self.store.clone(),
            meta: SnapshotMeta {
                last_log_id: applied,
                last_membership: membership,
                snapshot_id,
            },
            pairs,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let err = |e| storage_error(e, ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write);
        let mut pairs: Vec<Pair> = decode(b"snapshot", &data).map_err(err)?;
        // The snapshot's own metadata is authoritative for Raft's keys.
        pairs.retain(|(k, _)| k.first() != Some(&RAFT_PREFIX));
        if let Some(applied) = meta.last_log_id {
            pairs.push((APPLIED.to_vec(), encode(&applied)));
        }
        pairs.push((MEMBERSHIP.to_vec(), encode(&meta.last_membership)));
        pairs.sort();
        let record = encode(&SnapshotRecord {
            meta: meta.clone(),
            data,
        });
        let store = self.store.clone();
        blocking(move || {
            let err = |e| storage_error(e, ErrorSubject::Snapshot(None), ErrorVerb::Write);
            store.replace(Tree::State, pairs).map_err(err)?;
            store
                .apply(Tree::Snapshot, vec![(CURRENT_SNAPSHOT.to_vec(), Some(record))])
                .map_err(err)?;
            store.flush().map_err(err)
        })
        .await?;
        self.observe_keyring();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self
            .read::<SnapshotRecord>(Tree::Snapshot, CURRENT_SNAPSHOT)?
            .map(|r| Snapshot {
                meta: r.meta,
                snapshot: Box::new(Cursor::new(r.data)),
            }))
    }
}

/// A hash of the namespace (Raft's own keys excluded) and its applied index,
/// for comparing replicas.
pub fn digest(store: &dyn Store) -> Result<(Option<u64>, [u8; 32], u64), crate::store::StoreError> {
    let mut h = blake3::Hasher::new();
    let mut inodes = 0;
    for (k, v) in scan_all(store, Tree::State)? {
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
    let applied = match store.get(Tree::State, APPLIED)? {
        Some(b) => Some(decode::<LogId<u64>>(APPLIED, &b)?.index),
        None => None,
    };
    Ok((applied, *h.finalize().as_bytes(), inodes))
}
