//! When a quorum last accepted this node as leader: the clock of the leader
//! lease that lets reads skip a quorum round trip (`crate::commit`).
//!
//! The transport records, per peer, the moment it *sent* the last
//! AppendEntries (heartbeats included) that the peer accepted under a given
//! vote. A peer accepts only after it has taken that vote as its leader and
//! restarted its timers, so from a moment after the send it refuses to vote
//! for anyone else for openraft's `leader_lease` (the longest election
//! timeout) and starts no election of its own before that plus an election
//! timeout. Any new leader needs a vote from a quorum, which overlaps every
//! quorum that accepted this leader; so while `now - quorum_acked` is
//! shorter than that, with a margin for the peers' clocks running at a
//! slightly different rate, no other leader can exist.
//!
//! Send times come from the monotonic clock (`CLOCK_MONOTONIC`), which keeps
//! running while a process is stopped (SIGSTOP), so a leader that wakes up
//! from a long stop finds its lease long expired. openraft's own
//! `RaftMetrics::millis_since_quorum_ack` measures the same thing, but as
//! "milliseconds before the metrics were published": read later, it cannot
//! say how much later, which is exactly what a stopped process gets wrong.

use openraft::{LogId, Vote};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Instant;

/// Per peer: the latest accepted send time under one vote.
#[derive(Debug, Default)]
pub struct Acks {
    peers: Mutex<HashMap<u64, (Vote<u64>, Instant)>>,
}

impl Acks {
    /// Records that `peer` accepted an AppendEntries sent at `sent` by the
    /// leader holding `vote`.
    pub fn record(&self, peer: u64, vote: Vote<u64>, sent: Instant) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        match peers.get_mut(&peer) {
            // Replies can arrive out of order: keep the latest send.
            Some((v, t)) if *v == vote => *t = (*t).max(sent),
            // Another vote (a later term, or a late reply from an earlier
            // one) starts over: at worst the lease is shorter.
            _ => {
                peers.insert(peer, (vote, sent));
            }
        }
    }

    /// The latest moment by which a majority of every configuration in
    /// `joint` had accepted `leader` under `vote`, counting `leader` itself
    /// as accepting at `now`. None if some configuration has no such
    /// majority (or is empty).
    pub fn quorum_acked(
        &self,
        vote: &Vote<u64>,
        leader: u64,
        joint: &[BTreeSet<u64>],
        now: Instant,
    ) -> Option<Instant> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let mut earliest: Option<Instant> = None;
        for config in joint {
            let mut times: Vec<Instant> = config
                .iter()
                .filter_map(|id| match *id == leader {
                    true => Some(now),
                    false => peers.get(id).filter(|(v, _)| v == vote).map(|(_, t)| *t),
                })
                .collect();
            let majority = config.len() / 2 + 1;
            if config.is_empty() || times.len() < majority {
                return None;
            }
            // The majority-th latest time: that many members accepted at or
            // after it.
            times.sort_unstable_by(|a, b| b.cmp(a));
            let t = times[majority - 1];
            earliest = Some(earliest.map_or(t, |e| e.min(t)));
        }
        earliest
    }
}

/// This node's vote and commit index as openraft last handed them to the
/// log store, readable without a trip to openraft's core task. openraft
/// saves a vote before any message that depends on it leaves the node (a
/// vote granted to a rival included), and hands over a commit index before
/// it applies the entries, so before any client hears they committed.
#[derive(Debug, Default)]
pub struct Mirror {
    state: Mutex<Mirrored>,
}

/// What [`Mirror`] holds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mirrored {
    pub vote: Option<Vote<u64>>,
    pub committed: Option<LogId<u64>>,
}

impl Mirror {
    /// Records the vote just saved.
    pub fn set_vote(&self, vote: Vote<u64>) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).vote = Some(vote);
    }

    /// Records the commit index about to be applied.
    pub fn set_committed(&self, committed: LogId<u64>) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).committed = Some(committed);
    }

    /// The vote and commit index, read together.
    pub fn get(&self) -> Mirrored {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn vote(term: u64) -> Vote<u64> {
        let mut v = Vote::new(term, 1);
        v.commit();
        v
    }

    #[test]
    fn a_majority_of_acks_under_the_current_vote_counts() {
        let acks = Acks::default();
        let start = Instant::now();
        let now = start + Duration::from_millis(300);
        let three: Vec<BTreeSet<u64>> = vec![[1, 2, 3].into()];
        assert_eq!(acks.quorum_acked(&vote(2), 1, &three, now), None);
        acks.record(2, vote(2), start + Duration::from_millis(100));
        acks.record(2, vote(2), start + Duration::from_millis(50)); // a late reply
        assert_eq!(
            acks.quorum_acked(&vote(2), 1, &three, now),
            Some(start + Duration::from_millis(100))
        );
        acks.record(3, vote(2), start + Duration::from_millis(200));
        assert_eq!(
            acks.quorum_acked(&vote(2), 1, &three, now),
            Some(start + Duration::from_millis(200))
        );
        // Acks given to an earlier term do not count for this one.
        assert_eq!(acks.quorum_acked(&vote(3), 1, &three, now), None);
    }

    #[test]
    fn a_joint_configuration_needs_both_majorities() {
        let acks = Acks::default();
        let start = Instant::now();
        let now = start + Duration::from_millis(300);
        let joint: Vec<BTreeSet<u64>> = vec![[1, 2, 3].into(), [3, 4, 5].into()];
        acks.record(2, vote(1), start + Duration::from_millis(10));
        assert_eq!(acks.quorum_acked(&vote(1), 1, &joint, now), None);
        acks.record(3, vote(1), start + Duration::from_millis(20));
        acks.record(4, vote(1), start + Duration::from_millis(30));
        assert_eq!(
            acks.quorum_acked(&vote(1), 1, &joint, now),
            Some(start + Duration::from_millis(20))
        );
    }
}
