//! The scrubber: re-reads every block at a bounded rate and checks its
//! checksums. A bad replica is deleted here and reported, so that the meta
//! leader re-creates it from a good copy.

use crate::block_store::{BlockStore, BlockStoreError};
use nimbus_client::MetaClient;
use nimbus_common::ServerId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Counters an operator can watch.
#[derive(Default)]
pub struct ScrubStats {
    pub verified: AtomicU64,
    pub corrupt: AtomicU64,
    pub passes: AtomicU64,
}

/// Scrubs forever at `bytes_per_sec`, pausing `pause` between passes.
pub async fn run(
    meta: Arc<MetaClient>,
    store: Arc<BlockStore>,
    id: ServerId,
    bytes_per_sec: u64,
    pause: Duration,
    stats: Arc<ScrubStats>,
) {
    let bytes_per_sec = bytes_per_sec.max(1);
    loop {
        let s = store.clone();
        let blocks = match tokio::task::spawn_blocking(move || s.list()).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::warn!("scrub: cannot list blocks: {e}");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        for block in blocks {
            let s = store.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let len = s.len(block).unwrap_or(0);
                (len, s.verify(block))
            })
            .await;
            let Ok((len, result)) = outcome else { continue };
            match result {
                Ok(()) => {
                    stats.verified.fetch_add(1, Ordering::Relaxed);
                }
                Err(BlockStoreError::NotFound(_)) => {}
                Err(e @ BlockStoreError::Corrupt { .. }) => {
                    stats.corrupt.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%block, "scrub found a corrupt replica: {e}");
                    meta.report_bad_replica(block, id.0, &e.to_string()).await;
                    let s = store.clone();
                    let _ = tokio::task::spawn_blocking(move || s.delete(block)).await;
                }
                Err(e) => tracing::warn!(%block, "scrub: {e}"),
            }
            // The rate bound: this block's bytes at `bytes_per_sec`.
            tokio::time::sleep(Duration::from_micros(len.saturating_mul(1_000_000) / bytes_per_sec)).await;
        }
        stats.passes.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(pause).await;
    }
}
