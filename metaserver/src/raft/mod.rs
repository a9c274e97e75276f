//! Replication of the namespace with openraft: type configuration, durable
//! log and state machine over [`crate::store`], and the gRPC transport.

// openraft's traits return its own StorageError, which is large; boxing it
// here would only add conversions at every trait boundary.
#![allow(clippy::result_large_err)]

pub mod durable;
pub mod lease;
mod log_store;
mod network;
mod segments;
mod snapshots;
mod state_machine;

pub use log_store::{LogStore, LogStoreError};
pub use network::Network;
pub use segments::{Recovery, SegmentError};
pub use snapshots::SnapshotFileError;
pub use state_machine::{digest, SnapshotStats, StateMachine};

use crate::namespace::{Command, Reply};
use nimbus_common::{Errno, Timestamp};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One Raft entry: a batch of namespace commands committed together (group
/// commit), stamped with the leader's clock.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    pub time: Timestamp,
    /// Shared: openraft clones an entry for every reader (each follower's
    /// replication, the state machine), and a batch can hold a thousand
    /// commands. Encoded exactly as a plain list.
    pub commands: Arc<Vec<Command>>,
}

/// The outcome of every command of a [`Request`], in order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Response {
    pub results: Vec<Result<Reply, Errno>>,
}

openraft::declare_raft_types!(
    /// Nimbus' Raft types: node ids are u64, nodes carry their gRPC address.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = tokio::fs::File,
);

/// The Raft handle of a meta server.
pub type Raft = openraft::Raft<TypeConfig>;

/// openraft's storage error for our node ids.
pub type StorageError = openraft::StorageError<u64>;

fn storage_error(
    e: impl std::fmt::Display,
    what: openraft::ErrorSubject<u64>,
    verb: openraft::ErrorVerb,
) -> StorageError {
    openraft::StorageIOError::new(what, verb, openraft::AnyError::error(e.to_string())).into()
}

/// Runs blocking store work (sled flushes fsync) off the async workers; only
/// for rare work (snapshots): a hop to the blocking pool per small write costs
/// two thread wake-ups.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(storage_error(
            e,
            openraft::ErrorSubject::Store,
            openraft::ErrorVerb::Write,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DiskStore;
    use openraft::testing::{StoreBuilder, Suite};
    use std::sync::Arc;

    struct SledBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledBuilder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let err =
                |e: &dyn std::fmt::Display| storage_error(e, openraft::ErrorSubject::Store, openraft::ErrorVerb::Write);
            let dir = tempfile::tempdir().map_err(|e| err(&e))?;
            let store: Arc<dyn crate::store::Store> =
                Arc::new(DiskStore::open(&dir.path().join("ns.redb"), 16 << 20, None).map_err(|e| err(&e))?);
            let (log, _) = LogStore::open(&dir.path().join("raft-log")).map_err(|e| err(&e))?;
            let key = dir.path().join("master.key");
            nimbus_common::encryption::create_master_key(&key).map_err(|e| err(&e))?;
            let keys = Arc::new(crate::keys::Keys::load(&key).map_err(|e| err(&e))?);
            let sm = StateMachine::open(store, keys, &dir.path().join("snapshots")).map_err(|e| err(&e))?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's own conformance suite for log and state-machine storage.
    #[test]
    fn openraft_storage_suite() -> Result<(), StorageError> {
        Suite::test_all(SledBuilder)
    }
}
