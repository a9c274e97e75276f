//! The server side of the Raft transport.

use super::require_cluster_cert;
use crate::raft::Raft;
use nimbus_proto as pb;
use serde::{de::DeserializeOwned, Serialize};
use tonic::{Request, Response, Status};

/// Receives openraft messages from peers.
pub struct RaftService {
    raft: Raft,
    tls: bool,
}

impl RaftService {
    /// Feeds peers' messages to `raft`; with `tls`, only certified peers.
    pub fn new(raft: Raft, tls: bool) -> Self {
        RaftService { raft, tls }
    }
}

fn decode<T: DeserializeOwned>(request: Request<pb::RaftPayload>) -> Result<T, Status> {
    postcard::from_bytes(&request.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("malformed Raft message: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<pb::RaftPayload>, Status> {
    postcard::to_allocvec(value)
        .map(|data| Response::new(pb::RaftPayload { data }))
        .map_err(|e| Status::internal(format!("cannot encode Raft reply: {e}")))
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        require_cluster_cert(self.tls, &request)?;
        encode(&self.raft.append_entries(decode(request)?).await)
    }

    async fn vote(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        require_cluster_cert(self.tls, &request)?;
        encode(&self.raft.vote(decode(request)?).await)
    }

    async fn install_snapshot(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        require_cluster_cert(self.tls, &request)?;
        encode(&self.raft.install_snapshot(decode(request)?).await)
    }
}
