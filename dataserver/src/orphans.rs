//! Orphan collection: blocks on this server that the cluster does not record
//! here. A client that died between writing a block and committing it leaves
//! one; so does a chain write that failed half-way, and a server that comes
//! back after its replicas were given up for dead.
//!
//! Only blocks older than a grace period are offered: a block just written
//! is an orphan until its file's write is committed, and deleting it then
//! would lose data. The grace period must exceed the longest a client keeps
//! written blocks uncommitted.

use crate::block_store::BlockStore;
use nimbus_client::MetaClient;
use nimbus_common::{BlockId, ServerId};
use nimbus_proto as pb;
use nimbus_proto::data_cluster_client::DataClusterClient;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Blocks offered per inventory message.
const BATCH: usize = 1000;

/// Blocks older than `grace`, by their file's modification time.
fn old_blocks(store: &BlockStore, grace: Duration) -> Vec<BlockId> {
    let now = SystemTime::now();
    store
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter(|id| {
            store
                .path_of(*id)
                .and_then(|p| std::fs::metadata(p).ok())
                .and_then(|m| m.modified().ok())
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= grace)
        })
        .collect()
}

/// Offers the inventory every `every` and deletes what the leader calls orphans.
pub async fn run(meta: Arc<MetaClient>, store: Arc<BlockStore>, id: ServerId, grace: Duration, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let s = store.clone();
        let Ok(blocks) = tokio::task::spawn_blocking(move || old_blocks(&s, grace)).await else {
            continue;
        };
        let mut deleted = 0;
        for batch in blocks.chunks(BATCH) {
            let req = pb::InventoryRequest {
                server_id: id.0,
                blocks: batch.iter().map(|b| b.0.to_vec()).collect(),
            };
            let reply = meta
                .on_leader(|ch| {
                    let req = req.clone();
                    async move { DataClusterClient::new(ch).inventory(req).await }
                })
                .await;
            let orphans = match reply {
                Ok(r) => r.orphans,
                Err(e) => {
                    tracing::warn!("orphan scan: {e}");
                    break;
                }
            };
            for raw in orphans {
                let Some(block) = BlockId::from_bytes(&raw) else {
                    continue;
                };
                let s = store.clone();
                if let Ok(Ok(true)) = tokio::task::spawn_blocking(move || s.delete(block)).await {
                    deleted += 1;
                }
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "orphan blocks deleted");
        }
    }
}
