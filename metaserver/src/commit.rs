//! Group commit and batched read barriers on the leader.
//!
//! openraft 0.9 turns each `client_write` into one log entry and one fsync.
//! The [`Committer`] instead gathers whatever commands are waiting into one
//! [`Request`], with a few batches in flight at once: under load the next
//! batch fills while the previous one is being replicated, so throughput grows
//! with concurrency. The queue is bounded, which is the backpressure.
//!
//! A read must not see state older than any write acknowledged before it
//! began. [`ReadBarrier`] makes every read wait for a leadership check
//! (`ensure_linearizable`, one quorum round trip) that began after the read
//! did; all reads waiting at that moment share one check.

use crate::namespace::{Command, Reply};
use crate::raft::{Raft, Request};
use nimbus_common::{Errno, Timestamp};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::BasicNode;
use std::sync::Arc;
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
    /// Starts the batching task for `raft`.
    pub fn start(raft: Raft) -> Committer {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run_committer(raft, rx));
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

async fn run_committer(raft: Raft, mut rx: mpsc::Receiver<Pending>) {
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
        let raft = raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            commit_batch(&raft, batch).await;
        });
    }
}

async fn commit_batch(raft: &Raft, mut batch: Vec<Pending>) {
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
    match raft.client_write(request).await {
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
        Err(e) => {
            let err = match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(f.leader_id, f.leader_node),
                other => ServeError::Unavailable(other.to_string()),
            };
            for p in batch {
                let _ = p.reply.send(Err(err.clone()));
            }
        }
    }
}

/// Batches linearizability checks for reads.
#[derive(Clone)]
pub struct ReadBarrier {
    tx: mpsc::Sender<oneshot::Sender<Result<(), ServeError>>>,
}

impl ReadBarrier {
    /// Starts the barrier task for `raft`.
    pub fn start(raft: Raft) -> ReadBarrier {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run_barrier(raft, rx));
        ReadBarrier { tx }
    }

    /// Returns once this node is known to be the leader as of a moment after
    /// the call began, with every write committed before that moment applied.
    pub async fn wait(&self) -> Result<(), ServeError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || ServeError::Unavailable("meta server is shutting down".into());
        self.tx.send(tx).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
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
