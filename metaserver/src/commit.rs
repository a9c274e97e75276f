//! Group commit and batched read barriers on the leader.
//!
//! openraft 0.9 turns each `client_write` into one log entry and one fsync.
//! The [`Committer`] instead gathers whatever commands are waiting into one
//! [`Request`], with a few batches in flight at once: under load the next
//! batch fills while the previous one is being replicated, so throughput grows
//! with concurrency. The queue is bounded, which is the backpressure.
//!
//! A read must not see state older than any write acknowledged before it
//! began. [`ReadBarrier`] lets a read through on the leader while it holds a
//! leader lease ([`Lease`]): no disk, no network, no hand-off to another
//! task, only a wait until the commit index seen then is applied. Without a lease
//! (a new leader, a leader cut off from its quorum, a follower) the read
//! waits for a leadership check (`ensure_linearizable`, one quorum round
//! trip) that began after the read did; all reads waiting at that moment
//! share one check.

use crate::namespace::{Command, Reply};
use crate::raft::durable::Synced;
use crate::raft::lease::{Acks, Mirror};
use crate::raft::{Raft, Request};
use nimbus_common::{Errno, Timestamp};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Most commands in one Raft entry.
pub const MAX_BATCH: usize = 1024;
/// Most batches replicating at once.
const MAX_IN_FLIGHT: usize = 4;
/// Commands that may wait for a batch before callers are slowed down.
const QUEUE: usize = 8192;

/// Why a write or read could not be served here.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ServeError {
    /// This node is not the leader; the leader is given when known.
    #[error("not the leader")]
    NotLeader { leader: Option<(u64, String)> },
    /// Raft cannot serve right now (shutting down, no quorum).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

fn not_leader(leader_id: Option<u64>, node: Option<BasicNode>) -> ServeError {
    ServeError::NotLeader {
        leader: leader_id.zip(node.map(|n| n.addr)),
    }
}

type WriteResult = Result<Result<Reply, Errno>, ServeError>;

struct Pending {
    /// None asks only for an entry to be committed (it creates the root).
    command: Option<Command>,
    has_command: bool,
    reply: oneshot::Sender<WriteResult>,
}

/// Submits namespace commands to Raft in batches.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Pending>,
}

impl Committer {
    /// Starts the batching task for `raft`, whose log is on disk as far as
    /// `synced` says.
    pub fn start(raft: Raft, synced: Synced) -> Committer {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run_committer(raft, synced, rx));
        Committer { tx }
    }

    /// Commits `command` and returns its outcome.
    pub async fn submit(&self, command: Command) -> WriteResult {
        self.send(Some(command)).await
    }

    /// Commits an empty batch, which creates the root of a new namespace.
    pub async fn sync(&self) -> Result<(), ServeError> {
        self.send(None).await.map(|_| ())
    }

    async fn send(&self, command: Option<Command>) -> WriteResult {
        let (reply, rx) = oneshot::channel();
        let stopped = || ServeError::Unavailable("meta server is shutting down".into());
        self.tx
            .send(Pending {
                command,
                has_command: false,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

async fn run_committer(raft: Raft, synced: Synced, mut rx: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        // Whatever queued while the previous batches were replicating.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (raft, synced) = (raft.clone(), synced.clone());
        tokio::spawn(async move {
            let _permit = permit;
            commit_batch(&raft, &synced, batch).await;
        });
    }
}

/// How long an answer may wait for the leader's own log to reach its disk
/// after the entry was committed; only a failing disk takes that long.
const SYNC_WAIT: Duration = Duration::from_secs(10);

async fn commit_batch(raft: &Raft, synced: &Synced, mut batch: Vec<Pending>) {
    // Moved, not copied, into the entry; `has_command` remembers which
    // waiters get a result of their own.
    let mut commands = Vec::with_capacity(batch.len());
    for p in &mut batch {
        if let Some(c) = p.command.take() {
            commands.push(c);
            p.has_command = true;
        }
    }
    let request = Request {
        time: Timestamp::now(),
        commands: Arc::new(commands),
    };
    let written = match raft.client_write(request).await {
        // Committed on a majority of two or more voters means on the
        // leader's disk too (the transport waits for it); a single voter
        // commits its own entries before the flusher is done.
        Ok(response) => match synced.wait_through(response.log_id.index, SYNC_WAIT).await {
            Ok(()) => Ok(response),
            Err(e) => Err(ServeError::Unavailable(e.to_string())),
        },
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(not_leader(f.leader_id, f.leader_node)),
        Err(other) => Err(ServeError::Unavailable(other.to_string())),
    };
    match written {
        Ok(response) => {
            let mut results = response.data.results.into_iter();
            for p in batch {
                let outcome = match p.has_command {
                    false => Ok(Ok(Reply::Done)),
                    // The state machine answers every command of the batch.
                    true => results
                        .next()
                        .map(Ok)
                        .unwrap_or(Err(ServeError::Unavailable("short batch response".into()))),
                };
                let _ = p.reply.send(outcome);
            }
        }
        Err(err) => {
            for p in batch {
                let _ = p.reply.send(Err(err.clone()));
            }
        }
    }
}

/// The leader lease of one meta server: how long after a quorum last
/// accepted it as leader (recorded by the transport in [`Acks`]) this node
/// may answer reads without asking the quorum again.
#[derive(Clone, Debug)]
pub struct Lease {
    /// This node's Raft id.
    pub id: u64,
    /// Filled by the Raft transport.
    pub acks: Arc<Acks>,
    /// Filled by the log store.
    pub mirror: Arc<Mirror>,
    /// Shorter than any election could take: see [`Lease::new`].
    pub duration: Duration,
}

impl Lease {
    /// A lease for a cluster whose shortest election timeout is
    /// `election_timeout_min`. A follower that accepted this leader refuses
    /// other candidates for openraft's `leader_lease` (the longest election
    /// timeout) and starts no election of its own for longer still, so no
    /// other leader can be elected within `election_timeout_min` of an
    /// acknowledged send. A fifth of that is kept back for the peers' clocks
    /// running at another rate and for the time a read takes once it
    /// passed the check.
    pub fn new(id: u64, acks: Arc<Acks>, mirror: Arc<Mirror>, election_timeout_min: Duration) -> Lease {
        Lease {
            id,
            acks,
            mirror,
            duration: election_timeout_min - election_timeout_min / 5,
        }
    }
}

/// Batches linearizability checks for reads.
#[derive(Clone)]
pub struct ReadBarrier {
    tx: mpsc::Sender<oneshot::Sender<Result<(), ServeError>>>,
    raft: Raft,
    lease: Lease,
}

impl ReadBarrier {
    /// Starts the barrier task for `raft`, which reads under `lease`.
    pub fn start(raft: Raft, lease: Lease) -> ReadBarrier {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run_barrier(raft.clone(), rx));
        ReadBarrier { tx, raft, lease }
    }

    /// Returns once this node is known to be the leader as of a moment after
    /// the call began, with every write committed before that moment applied.
    pub async fn wait(&self) -> Result<(), ServeError> {
        if let Some(index) = self.leased_read_index() {
            return self.applied(index).await;
        }
        let (tx, rx) = oneshot::channel();
        let stopped = || ServeError::Unavailable("meta server is shutting down".into());
        self.tx.send(tx).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// The commit index to wait for, if this node leads under a lease that
    /// is still running now, after the read began.
    ///
    /// Nothing here waits for openraft's core task: the vote and the commit
    /// index come from the log store's [`Mirror`], the membership from the
    /// metrics. The vote is saved before this node can grant it to anyone
    /// else, and a commit index before any client hears of it, so both are
    /// current for this purpose. The membership may trail by a step, which is
    /// harmless: it changes through a joint configuration, and the lease then
    /// asks a majority of more configurations, never fewer.
    fn leased_read_index(&self) -> Option<u64> {
        let id = self.lease.id;
        let seen = self.lease.mirror.get();
        let (vote, committed) = (seen.vote?, seen.committed?);
        // Until a new leader has committed an entry of its own term, its
        // commit index may stop short of entries an earlier leader
        // acknowledged.
        if !vote.is_committed()
            || vote.leader_id().voted_for() != Some(id)
            || committed.leader_id.term != vote.leader_id().term
        {
            return None;
        }
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.state != ServerState::Leader {
            return None;
        }
        // Taken after the vote was read: the lease must cover that moment,
        // and a later `now` only makes the check stricter.
        let now = Instant::now();
        let joint = metrics.membership_config.membership().get_joint_config();
        let acked = self.lease.acks.quorum_acked(&vote, id, joint, now)?;
        (now.saturating_duration_since(acked) < self.lease.duration).then_some(committed.index)
    }

    /// Waits until the state machine has applied `index`.
    async fn applied(&self, index: u64) -> Result<(), ServeError> {
        if self
            .raft
            .metrics()
            .borrow()
            .last_applied
            .is_some_and(|l| l.index >= index)
        {
            return Ok(());
        }
        self.raft
            .wait(None)
            .applied_index_at_least(Some(index), "leased read")
            .await
            .map(|_| ())
            .map_err(|e| ServeError::Unavailable(e.to_string()))
    }
}
async fn run_barrier(raft: Raft, mut rx: mpsc::Receiver<oneshot::Sender<Result<(), ServeError>>>) {
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let result = match raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(not_leader(f.leader_id, f.leader_node))
            }
            Err(e) => Err(ServeError::Unavailable(e.to_string())),
        };
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}
