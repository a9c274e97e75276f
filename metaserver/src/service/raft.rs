//! The server side of the Raft transport.

use super::require_cluster_cert;
use crate::raft::Raft;
use nimbus_proto as pb;
use serde::{de::DeserializeOwned, Serialize};
use tonic::{Request, Response, Status};

/// Receives openraft messages from peers.
pub struct RaftService {
    raft: Raft,
    id: u64,
    tls: bool,
}

impl RaftService {
    /// Feeds peers' messages to `raft`; with `tls`, only certified peers.
    pub fn new(raft: Raft, id: u64, tls: bool) -> Self {
        RaftService { raft, id, tls }
    }

    /// Checks the caller's certificate and that the message is for this
    /// node, then decodes it. A message for another node id means two nodes
    /// share an address: accepting it would let a node talk to itself.
    fn accept<T: DeserializeOwned>(&self, request: Request<pb::RaftPayload>) -> Result<T, Status> {
        require_cluster_cert(self.tls, &request)?;
        let payload = request.into_inner();
        if payload.target != self.id {
            return Err(Status::failed_precondition(format!(
                "Raft message for node {} reached node {}: check the members' addresses",
                payload.target, self.id
            )));
        }
        postcard::from_bytes(&payload.data)
            .map_err(|e| Status::invalid_argument(format!("malformed Raft message: {e}")))
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Response<pb::RaftPayload>, Status> {
    postcard::to_allocvec(value)
        .map(|data| {
            Response::new(pb::RaftPayload {
                data,
                target: 0, /* replies are not addressed */
            })
        })
        .map_err(|e| Status::internal(format!("cannot encode Raft reply: {e}")))
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        encode(&self.raft.append_entries(self.accept(request)?).await)
    }

    async fn vote(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        encode(&self.raft.vote(self.accept(request)?).await)
    }

    async fn install_snapshot(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        encode(&self.raft.install_snapshot(self.accept(request)?).await)
    }
}
