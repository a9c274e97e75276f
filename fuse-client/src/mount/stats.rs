//! What the mount did, for `--metrics`: kernel requests by kind and what
//! they cost in the cluster (namespace commits and reads, block transfers),
//! so that a benchmark can print round trips per file.

use nimbus_client::MetaClient;
use nimbus_common::metrics::Page;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Counters of one mount.
#[derive(Default)]
pub struct Stats {
    requests: Mutex<BTreeMap<&'static str, u64>>,
}

impl Stats {
    /// Counts one event of kind `what` (a kernel request, a folded setattr).
    pub fn count(&self, what: &'static str) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(what)
            .or_default() += 1;
    }

    /// The metrics page: these counters and the client's.
    pub fn render(&self, client: &MetaClient) -> String {
        let requests: Vec<(String, f64)> = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (format!("op=\"{k}\""), *v as f64))
            .collect();
        let calls: Vec<(String, f64)> = client
            .counters()
            .snapshot()
            .into_iter()
            .map(|(k, v)| (format!("kind=\"{k}\""), v as f64))
            .collect();
        let mut page = Page::default();
        page.metric(
            "nimbus_mount_requests_total",
            "counter",
            "FUSE requests served, and attribute changes folded into a commit, by kind",
            &as_refs(&requests),
        );
        page.metric(
            "nimbus_mount_cluster_total",
            "counter",
            "What the mount asked of the cluster: namespace writes (Raft commits) and reads, allocations, locations, block transfers and bytes",
            &as_refs(&calls),
        );
        page.finish()
    }
}

fn as_refs(v: &[(String, f64)]) -> Vec<(&str, f64)> {
    v.iter().map(|(l, n)| (l.as_str(), *n)).collect()
}

/// Serves the metrics of `stats` and `client` on `addr` (host:port).
pub fn serve(addr: String, stats: Arc<Stats>, client: Arc<MetaClient>) {
    let render: nimbus_common::metrics::Render = Arc::new(move || stats.render(&client));
    tokio::spawn(async move {
        if let Err(e) = nimbus_common::metrics::serve(addr.clone(), render).await {
            tracing::error!("metrics on {addr}: {e}");
        }
    });
}
