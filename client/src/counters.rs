//! What a client asked of the cluster: calls by kind and bytes moved, so that
//! a mount can show how many round trips a workload costs.

use nimbus_proto::ns_request::Op;
use std::sync::atomic::{AtomicU64, Ordering};

/// Running totals since the client was made.
#[derive(Debug, Default)]
pub struct Counters {
    /// Namespace changes (each one Raft command).
    pub ns_writes: AtomicU64,
    /// Namespace changes answered (or failed): counted when the call
    /// returns, so a read that began after this count was taken sees every
    /// change it counts.
    pub ns_writes_done: AtomicU64,
    /// Namespace reads (lookup, getattr, readdir, layout ...).
    pub ns_reads: AtomicU64,
    /// Account calls (sign-in, whoami, names).
    pub account_calls: AtomicU64,
    /// Block allocations asked of the meta leader.
    pub allocations: AtomicU64,
    /// Block locations asked of the meta leader.
    pub locates: AtomicU64,
    /// Blocks sent to data servers, and their bytes.
    pub block_writes: AtomicU64,
    pub block_write_bytes: AtomicU64,
    /// Block reads from data servers, and their bytes.
    pub block_reads: AtomicU64,
    pub block_read_bytes: AtomicU64,
    /// Small files' contents committed inside the namespace command.
    pub inline_commits: AtomicU64,
}

impl Counters {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one namespace call.
    pub fn namespace(&self, op: &Op) {
        let counter = if is_read(op) { &self.ns_reads } else { &self.ns_writes };
        Counters::add(counter, 1);
        if let Op::CommitWrite(c) = op {
            if c.inline_data.is_some() {
                Counters::add(&self.inline_commits, 1);
            }
        }
    }

    /// Counts the return of a namespace call, a read or not.
    pub fn namespace_done(&self, op_was_read: bool) {
        if !op_was_read {
            Counters::add(&self.ns_writes_done, 1);
        }
    }

    /// Every total, named as in the mount's metrics.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("ns_writes", get(&self.ns_writes)),
            ("ns_reads", get(&self.ns_reads)),
            ("account_calls", get(&self.account_calls)),
            ("allocations", get(&self.allocations)),
            ("locates", get(&self.locates)),
            ("block_writes", get(&self.block_writes)),
            ("block_write_bytes", get(&self.block_write_bytes)),
            ("block_reads", get(&self.block_reads)),
            ("block_read_bytes", get(&self.block_read_bytes)),
            ("inline_commits", get(&self.inline_commits)),
        ]
    }
}

/// Whether `op` only reads the namespace.
pub fn is_read(op: &Op) -> bool {
    matches!(
        op,
        Op::Lookup(_)
            | Op::Getattr(_)
            | Op::Readlink(_)
            | Op::Readdir(_)
            | Op::Statfs(_)
            | Op::Getxattr(_)
            | Op::Listxattr(_)
            | Op::GetLayout(_)
            | Op::Access(_)
            | Op::PlanMakeNode(_)
    )
}
