//! Heartbeats to the meta leader: capacity and load out; deletions and
//! copies to make back. The leader is found (and followed) by the client.

use crate::block_store::BlockStore;
use nimbus_client::blocks::fetch_block;
use nimbus_client::MetaClient;
use nimbus_common::{BlockId, ServerId};
use nimbus_proto as pb;
use nimbus_proto::data_cluster_client::DataClusterClient;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// What this server reports about itself.
pub struct Identity {
    pub id: ServerId,
    pub addr: String,
    pub zone: String,
}

/// Outcomes to report in the next heartbeat.
#[derive(Default)]
struct Done {
    deleted: Vec<Vec<u8>>,
    replicated: Vec<Vec<u8>>,
    failed: Vec<Vec<u8>>,
}

/// Sends heartbeats until the process ends.
pub async fn run(meta: Arc<MetaClient>, store: Arc<BlockStore>, me: Identity, load: Arc<AtomicU32>) {
    let done = Arc::new(Mutex::new(Done::default()));
    // A finished copy is reported at once rather than at the next tick: the
    // leader schedules the next copies only when it hears of this one.
    let finished = Arc::new(Notify::new());
    let mut interval = Duration::from_secs(1);
    loop {
        let usage = store.usage();
        let (deleted, replicated, failed) = {
            let mut d = done.lock().unwrap_or_else(|p| p.into_inner());
            (
                std::mem::take(&mut d.deleted),
                std::mem::take(&mut d.replicated),
                std::mem::take(&mut d.failed),
            )
        };
        let req = pb::HeartbeatRequest {
            server_id: me.id.0,
            addr: me.addr.clone(),
            zone: me.zone.clone(),
            capacity: usage.capacity,
            used: usage.used,
            blocks: usage.blocks,
            load: load.load(Ordering::Relaxed),
            deleted: deleted.clone(),
            replicated: replicated.clone(),
            replicate_failed: failed.clone(),
        };
        let reply = meta
            .on_leader(|ch| {
                let req = req.clone();
                async move { DataClusterClient::new(ch).heartbeat(req).await }
            })
            .await;
        match reply {
            Ok(reply) => {
                interval = Duration::from_millis(u64::from(reply.interval_ms.clamp(100, 60_000)));
                apply(&meta, &store, reply, &done, &finished).await;
            }
            Err(e) => {
                tracing::warn!("heartbeat: {e}");
                // Report these again next time.
                let mut d = done.lock().unwrap_or_else(|p| p.into_inner());
                d.deleted.extend(deleted);
                d.replicated.extend(replicated);
                d.failed.extend(failed);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = finished.notified() => {}
        }
    }
}

/// Deletes what the leader says is garbage, then starts the copies it asks for.
async fn apply(
    meta: &Arc<MetaClient>,
    store: &Arc<BlockStore>,
    reply: pb::HeartbeatReply,
    done: &Arc<Mutex<Done>>,
    finished: &Arc<Notify>,
) {
    let ids: Vec<BlockId> = reply.delete.iter().filter_map(|b| BlockId::from_bytes(b)).collect();
    if !ids.is_empty() {
        let s = store.clone();
        let deleted = tokio::task::spawn_blocking(move || {
            ids.into_iter()
                .filter(|id| match s.delete(*id) {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(block = %id, "delete: {e}");
                        false
                    }
                })
                .map(|id| id.0.to_vec())
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        done.lock().unwrap_or_else(|p| p.into_inner()).deleted.extend(deleted);
    }
    for task in reply.replicate {
        let (meta, store, done, finished) = (meta.clone(), store.clone(), done.clone(), finished.clone());
        tokio::spawn(async move {
            let ok = copy_block(&meta, &store, &task).await;
            {
                let mut d = done.lock().unwrap_or_else(|p| p.into_inner());
                match ok {
                    Ok(()) => d.replicated.push(task.block_id),
                    Err(e) => {
                        tracing::warn!("copy from {}: {e}", task.source);
                        d.failed.push(task.block_id);
                    }
                }
            }
            finished.notify_one();
        });
    }
}

async fn copy_block(meta: &MetaClient, store: &Arc<BlockStore>, task: &pb::ReplicateTask) -> Result<(), String> {
    let id = BlockId::from_bytes(&task.block_id).ok_or("bad block id")?;
    let channel = meta.channel(&task.source).map_err(|e| e.to_string())?;
    let data = fetch_block(channel, id, task.read_token.clone(), 0, 0)
        .await
        .map_err(|s| s.message().to_owned())?;
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.put(id, &data, true).map(|_| ()).map_err(|e| e.to_string()))
        .await
        .map_err(|e| e.to_string())?
}
