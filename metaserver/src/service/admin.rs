//! Cluster administration: status, membership changes, snapshots, digests.

use super::require_cluster_cert;
use crate::commit::ServeError;
use crate::raft::{digest, Raft};
use crate::store::Store;
use nimbus_proto as pb;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Administration of one meta server.
pub struct AdminService {
    raft: Raft,
    store: Arc<dyn Store>,
    tls: bool,
}

impl AdminService {
    /// Administers `raft`; with `tls`, changes need a cluster certificate.
    pub fn new(raft: Raft, store: Arc<dyn Store>, tls: bool) -> Self {
        AdminService { raft, store, tls }
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
        require_cluster_cert(self.tls, &request)?;
        let r = request.into_inner();
        validate_addr(&r.addr)?;
        let m = self.raft.metrics().borrow().clone();
        if m.membership_config.membership().voter_ids().any(|v| v == r.id) {
            return Ok(Response::new(self.status()));
        }
        // Learner first, caught up (add_learner blocks until then), then voter:
        // a voter that lags would weaken the quorum it joins.
        self.raft
            .add_learner(r.id, BasicNode { addr: r.addr }, true)
            .await
            .map_err(write_error)?;
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
        require_cluster_cert(self.tls, &request)?;
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
        require_cluster_cert(self.tls, &request)?;
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
}
