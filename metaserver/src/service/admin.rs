//! Cluster administration: status, membership changes, snapshots, digests.

use super::require_cluster_cert;
use crate::commit::{Committer, ServeError};
use crate::keys::Keys;
use crate::namespace::{Caller, Command, Op, Txn};
use crate::raft::{digest, Raft, SnapshotStats};
use crate::store::Store;
use nimbus_common::encryption::{self, Key};
use nimbus_common::tls::Security;
use nimbus_proto as pb;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Administration of one meta server.
pub struct AdminService {
    raft: Raft,
    store: Arc<dyn Store>,
    security: Security,
    keys: Arc<Keys>,
    committer: Committer,
    node: NodeFacts,
}

/// What a node's status reports of its own resources.
pub struct NodeFacts {
    /// The node's data directory (log, store, snapshots).
    pub data_dir: PathBuf,
    pub cache_bytes: u64,
    pub snapshots: Arc<SnapshotStats>,
}

impl AdminService {
    /// Administers `raft`; with TLS, changes need a cluster certificate.
    /// `security` also reaches the other meta servers (key rotation).
    pub fn new(
        raft: Raft,
        store: Arc<dyn Store>,
        security: Security,
        keys: Arc<Keys>,
        committer: Committer,
        node: NodeFacts,
    ) -> Self {
        AdminService {
            raft,
            store,
            security,
            keys,
            committer,
            node,
        }
    }

    fn tls(&self) -> bool {
        self.security.is_tls()
    }

    /// Stages `key` on voter `id` at `addr` (this node directly).
    async fn stage_on(&self, id: u64, addr: &str, key: &Key) -> Result<(), Status> {
        if id == self.raft.metrics().borrow().id {
            return self.keys.stage(*key).map_err(|e| Status::internal(e.to_string()));
        }
        let channel = self
            .security
            .endpoint(addr)
            .map_err(|e| Status::internal(e.to_string()))?
            .connect()
            .await
            .map_err(|e| Status::unavailable(format!("meta server {id} at {addr}: {e}")))?;
        let mut request = Request::new(pb::StageKeyRequest {
            key: key.as_bytes().to_vec(),
        });
        request.set_timeout(Duration::from_secs(10));
        pb::admin_client::AdminClient::new(channel)
            .stage_key(request)
            .await
            .map_err(|s| {
                Status::unavailable(format!(
                    "staging the new key on meta server {id} at {addr}: {}",
                    s.message()
                ))
            })?;
        Ok(())
    }

    fn status(&self) -> pb::NodeStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| pb::Member {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect::<Vec<_>>();
        let addr_of = |id: u64| membership.get_node(&id).map(|n| n.addr.clone()).unwrap_or_default();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        pb::NodeStatus {
            id: m.id,
            addr: addr_of(m.id),
            role: role.into(),
            term: m.current_term,
            leader_id: m.current_leader,
            leader_addr: m.current_leader.map(addr_of).unwrap_or_default(),
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            members,
            master_key: self.keys.fingerprints().0.to_vec(),
            next_master_key: self.keys.fingerprints().1.map(|f| f.to_vec()).unwrap_or_default(),
            cluster_key: self.keys.fingerprints().2.map(|f| f.to_vec()).unwrap_or_default(),
            store_bytes: dir_bytes(&self.node.data_dir),
            resident_bytes: resident_bytes(),
            cache_bytes: self.node.cache_bytes,
            snapshot_bytes: self.node.snapshots.bytes.load(Ordering::Relaxed),
            snapshots_built: self.node.snapshots.built.load(Ordering::Relaxed),
            snapshots_installed: self.node.snapshots.installed.load(Ordering::Relaxed),
            snapshot_build_ms: (self.node.snapshots.built.load(Ordering::Relaxed) > 0)
                .then(|| self.node.snapshots.build_ms.load(Ordering::Relaxed)),
            snapshot_install_ms: (self.node.snapshots.installed.load(Ordering::Relaxed) > 0)
                .then(|| self.node.snapshots.install_ms.load(Ordering::Relaxed)),
        }
    }
}

/// Bytes the files under `dir` take on disk (allocated blocks: sparse files
/// count for what they hold).
fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// This process's resident memory, from /proc.
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// How long one `add_member` call waits for a learner to catch up: under the
/// client's per-call timeout, which then asks again.
const CATCH_UP_WAIT: Duration = Duration::from_secs(3);
/// A learner this close to the leader's log may become a voter.
const CAUGHT_UP_ENTRIES: u64 = 64;

/// Waits up to `limit` until `id`'s log is within a few entries of
/// this leader's; otherwise says how far behind it is.
async fn wait_caught_up(raft: &Raft, id: u64, limit: Duration) -> Result<(), String> {
    let mut metrics = raft.metrics();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let behind = {
            let m = metrics.borrow_and_update();
            let matched = m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten());
            match (matched, m.last_log_index) {
                (Some(matched), Some(last)) if last.saturating_sub(matched.index) <= CAUGHT_UP_ENTRIES => return Ok(()),
                (Some(matched), Some(last)) => format!("{} entries behind", last - matched.index),
                _ if m.replication.is_none() => return Err("this node stopped leading".into()),
                _ => "nothing replicated to it yet".into(),
            }
        };
        if tokio::time::timeout_at(deadline, metrics.changed()).await.is_err() {
            return Err(behind);
        }
    }
}

fn write_error(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ServeError::NotLeader {
            leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
        }
        .into(),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => Status::failed_precondition(c.to_string()),
        other => Status::unavailable(other.to_string()),
    }
}

/// Checks a `host:port` a node will be reached at.
fn validate_addr(addr: &str) -> Result<(), Status> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => Ok(()),
        _ => Err(Status::invalid_argument(format!("{addr:?} is not host:port"))),
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::NodeStatus>, Status> {
        Ok(Response::new(self.status()))
    }

    async fn add_member(&self, request: Request<pb::AddMemberRequest>) -> Result<Response<pb::NodeStatus>, Status> {
        require_cluster_cert(self.tls(), &request)?;
        let r = request.into_inner();
        validate_addr(&r.addr)?;
        let m = self.raft.metrics().borrow().clone();
        if m.membership_config.membership().voter_ids().any(|v| v == r.id) {
            return Ok(Response::new(self.status()));
        }
        // Learner first, caught up, then voter: a voter that lags would
        // weaken the quorum it joins. (openraft's blocking add_learner gives
        // up waiting after half a second and returns as if it had caught up.)
        if m.membership_config.membership().get_node(&r.id).is_none() {
            self.raft
                .add_learner(r.id, BasicNode { addr: r.addr }, false)
                .await
                .map_err(write_error)?;
        }
        if let Err(behind) = wait_caught_up(&self.raft, r.id, CATCH_UP_WAIT).await {
            // The client asks again (it retries on Aborted) until its own
            // deadline; the learner keeps catching up meanwhile.
            return Err(Status::aborted(format!(
                "node {} joined as a learner and is catching up ({behind}); it becomes a voter once it has: \
                 run the same command again if this one gave up",
                r.id
            )));
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([r.id])), false)
            .await
            .map_err(write_error)?;
        Ok(Response::new(self.status()))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        require_cluster_cert(self.tls(), &request)?;
        let id = request.into_inner().id;
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let is_voter = membership.voter_ids().any(|v| v == id);
        if !is_voter && membership.get_node(&id).is_none() {
            return Err(Status::not_found(format!("node {id} is not a member")));
        }
        if is_voter && membership.voter_ids().count() <= 1 {
            return Err(Status::failed_precondition("cannot remove the last voter"));
        }
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        // retain=false: a removed voter does not linger as a learner.
        self.raft.change_membership(change, false).await.map_err(write_error)?;
        Ok(Response::new(self.status()))
    }

    async fn digest(&self, _: Request<pb::DigestRequest>) -> Result<Response<pb::DigestReply>, Status> {
        let store = self.store.clone();
        let (applied, hash, inodes) = tokio::task::spawn_blocking(move || digest(store.as_ref()))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::DigestReply {
            last_applied: applied,
            digest: hash.to_vec(),
            inodes,
        }))
    }

    async fn trigger_snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        require_cluster_cert(self.tls(), &request)?;
        let applied = self.raft.metrics().borrow().last_applied;
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut metrics = self.raft.metrics();
        let wait = metrics.wait_for(|m| m.snapshot >= applied);
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .map_err(|_| Status::deadline_exceeded("snapshot still building after 60 s"))?
            .map_err(|_| Status::unavailable("raft stopped"))?;
        Ok(Response::new(self.status()))
    }

    async fn rotate_key(&self, request: Request<pb::RotateKeyRequest>) -> Result<Response<pb::NodeStatus>, Status> {
        require_cluster_cert(self.tls(), &request)?;
        if !self.tls() {
            return Err(Status::failed_precondition(
                "key rotation sends the new master key to every meta server: it needs TLS",
            ));
        }
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(m.id) {
            let membership = m.membership_config.membership();
            let leader = m
                .current_leader
                .and_then(|l| membership.get_node(&l).map(|n| (l, n.addr.clone())));
            return Err(ServeError::NotLeader { leader }.into());
        }
        let current = Txn::new(self.store.as_ref())
            .keyring()
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::unavailable("the cluster has no key ring yet; try again in a moment"))?;
        // Every voter keeps the new key before any ring names it, so that
        // none is left unable to read the ring after the commit.
        let key = Key::random().map_err(|e| Status::internal(e.to_string()))?;
        let membership = m.membership_config.membership().clone();
        for id in membership.voter_ids() {
            let addr = membership.get_node(&id).map(|n| n.addr.clone()).unwrap_or_default();
            self.stage_on(id, &addr, &key).await?;
        }
        let ring = self
            .keys
            .rewrapped_for_next()
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        if ring.master != key.fingerprint() {
            return Err(Status::aborted(
                "another rotation staged a different key meanwhile; run it again",
            ));
        }
        let op = Op::SetKeyring {
            expect: Some(current.master),
            ring,
        };
        match self
            .committer
            .submit(Command {
                caller: Caller::root(),
                op,
                request: None,
            })
            .await?
        {
            Ok(_) => {}
            Err(e) => {
                return Err(Status::aborted(format!(
                    "the key ring changed meanwhile ({e}); run the rotation again"
                )))
            }
        }
        tracing::info!(
            from = %encryption::hex(&current.master),
            to = %encryption::hex(&key.fingerprint()),
            "rotated the master key"
        );
        Ok(Response::new(self.status()))
    }

    async fn stage_key(&self, request: Request<pb::StageKeyRequest>) -> Result<Response<pb::NodeStatus>, Status> {
        require_cluster_cert(self.tls(), &request)?;
        if !self.tls() {
            return Err(Status::failed_precondition("a master key travels only over TLS"));
        }
        let key = Key::from_bytes(&request.into_inner().key)
            .ok_or_else(|| Status::invalid_argument("a master key is 32 bytes"))?;
        self.keys.stage(key).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(self.status()))
    }
}
