//! How far this node's Raft log is on disk, and when the leader may answer
//! its own appends before their fdatasync.
//!
//! openraft 0.9 appends a leader's new entries to its own log and waits for
//! the log store's callback before it sends them to any follower, so a
//! commit cost the leader's fdatasync *and then* a follower's. Here the
//! leader's log store answers once the entries are written, and a flusher
//! thread fdatasyncs them while they travel ([`super::LogStore`]). What keeps
//! "an entry counts only once it is on disk on a majority" true is the
//! transport: it hands openraft a follower's acknowledgement of entries only
//! once the leader's own log is on disk through them ([`Synced::wait_through`]).
//! Every majority of a cluster of two or more voters holds a follower, so
//! openraft cannot count an entry as committed before it is on the disks of
//! the leader and of a follower: a majority. A single voter has no follower
//! to wait on, so there ([`EarlyAck`]) the leader fsyncs before it answers,
//! as before; and the leader answers a client only once its own log is on
//! disk through the client's entry, whatever the configuration.

use openraft::{Entry, EntryPayload, Vote};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use super::TypeConfig;

/// The index below which every entry of this node's log is on disk.
#[derive(Clone, Debug)]
pub struct Synced(Arc<watch::Sender<u64>>);

/// The local log did not reach the disk in time (or its fsync failed).
#[derive(Debug, thiserror::Error)]
#[error("this meta server's Raft log is not on disk through entry {0} yet")]
pub struct NotSynced(pub u64);

impl Synced {
    /// Every entry below `next` is on disk.
    pub fn new(next: u64) -> Synced {
        Synced(Arc::new(watch::Sender::new(next)))
    }

    /// The first index not known to be on disk.
    pub fn get(&self) -> u64 {
        *self.0.borrow()
    }

    /// Entries below `next` reached the disk.
    pub fn advance(&self, next: u64) {
        self.0.send_if_modified(|s| {
            let moved = next > *s;
            *s = (*s).max(next);
            moved
        });
    }

    /// Entries from `from` on were removed (a follower's log truncated).
    pub fn lower(&self, from: u64) {
        self.0.send_if_modified(|s| {
            let moved = from < *s;
            *s = (*s).min(from);
            moved
        });
    }

    /// Waits, at most `limit`, until entries through `index` are on disk.
    pub async fn wait_through(&self, index: u64, limit: Duration) -> Result<(), NotSynced> {
        if self.get() > index {
            return Ok(());
        }
        let mut rx = self.0.subscribe();
        let reached = tokio::time::timeout(limit, async { rx.wait_for(|s| *s > index).await.is_ok() }).await;
        match reached {
            Ok(true) => Ok(()),
            _ => Err(NotSynced(index)),
        }
    }
}

/// Whether this node's own appends may be answered before their fdatasync:
/// only while it is the leader of a configuration of two or more voters.
#[derive(Debug)]
pub struct EarlyAck {
    /// This node's id; `u64::MAX` until known, which turns early answers off.
    node: AtomicU64,
    /// Voters of the newest configuration seen.
    voters: AtomicUsize,
}

impl Default for EarlyAck {
    fn default() -> Self {
        EarlyAck {
            node: AtomicU64::new(u64::MAX),
            voters: AtomicUsize::new(0),
        }
    }
}

impl EarlyAck {
    /// Turns early answers on for `node`, in a configuration of `voters`.
    pub fn set(&self, node: u64, voters: usize) {
        self.voters.store(voters, Ordering::SeqCst);
        self.node.store(node, Ordering::SeqCst);
    }

    /// The newest configuration has `voters` voters.
    pub fn set_voters(&self, voters: usize) {
        self.voters.store(voters, Ordering::SeqCst);
    }

    /// Whether entries appended under `vote` (the stored one), the last of
    /// them in `entries`, may be answered before their fdatasync. A
    /// configuration entry among them counts already: Raft uses the newest
    /// configuration in the log, committed or not.
    pub(super) fn allows(&self, vote: Option<&Vote<u64>>, entries: &[Entry<TypeConfig>]) -> bool {
        if let Some(voters) = entries.iter().rev().find_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some(m.voter_ids().count()),
            _ => None,
        }) {
            self.set_voters(voters);
        }
        self.voters.load(Ordering::SeqCst) >= 2 && self.leads(vote)
    }

    /// Whether `vote` makes this node the leader: then its appends are its
    /// own entries, not a copy of another leader's.
    pub(super) fn leads(&self, vote: Option<&Vote<u64>>) -> bool {
        let node = self.node.load(Ordering::SeqCst);
        node != u64::MAX && vote.is_some_and(|v| v.is_committed() && v.leader_id().node_id == node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId, Membership};
    use std::collections::BTreeSet;

    fn entry(payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 5),
            payload,
        }
    }

    #[test]
    fn only_the_leader_of_two_or_more_voters_answers_early() {
        let early = EarlyAck::default();
        let leader = Vote::new_committed(1, 1);
        let blank = [entry(EntryPayload::Blank)];
        assert!(!early.allows(Some(&leader), &blank), "node unknown");
        early.set(1, 3);
        assert!(early.allows(Some(&leader), &blank));
        assert!(!early.allows(Some(&Vote::new(1, 1)), &blank), "a candidate's vote");
        assert!(!early.allows(Some(&Vote::new_committed(2, 2)), &blank), "a follower");
        assert!(!early.allows(None, &blank));
        let one = Membership::<u64, openraft::BasicNode>::new(vec![BTreeSet::from([1])], None);
        assert!(!early.allows(Some(&leader), &[entry(EntryPayload::Membership(one))]));
        assert!(!early.allows(Some(&leader), &blank), "stays off with one voter");
        early.set_voters(3);
        assert!(early.allows(Some(&leader), &blank));
    }

    #[tokio::test]
    async fn waits_until_the_log_is_on_disk() {
        let synced = Synced::new(10);
        assert!(synced.wait_through(9, Duration::ZERO).await.is_ok());
        assert!(synced.wait_through(10, Duration::from_millis(10)).await.is_err());
        let s = synced.clone();
        let waiter = tokio::spawn(async move { s.wait_through(12, Duration::from_secs(5)).await });
        synced.advance(12);
        synced.advance(13);
        assert!(waiter.await.unwrap().is_ok());
        synced.lower(11);
        assert_eq!(synced.get(), 11);
        synced.advance(5);
        assert_eq!(synced.get(), 11);
    }
}
