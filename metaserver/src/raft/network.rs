//! The Raft transport between meta servers: openraft messages, postcard-
//! encoded, over the `Raft` gRPC service and the cluster's TLS.

use super::durable::Synced;
use super::lease::Acks;
use super::TypeConfig;
use nimbus_common::tls::Security;
use nimbus_proto::raft_client::RaftClient;
use nimbus_proto::RaftPayload;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tonic::transport::Channel;

/// Creates connections to peers; one HTTP/2 channel per address, shared.
#[derive(Clone)]
pub struct Network {
    security: Security,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    acks: Arc<Acks>,
    synced: Synced,
}

impl Network {
    /// A transport that connects with `security`, records in `acks` which
    /// peers accepted this node as leader, and when, and reports a peer's
    /// copy of entries only once `synced` says they are on this node's
    /// disk too.
    pub fn new(security: Security, acks: Arc<Acks>, synced: Synced) -> Network {
        Network {
            security,
            channels: Arc::default(),
            acks,
            synced,
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let channel = self.security.endpoint(addr).map_err(|e| e.to_string())?.connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// A connection to one peer.
pub struct Peer {
    target: u64,
    client: Result<RaftClient<Channel>, String>,
    acks: Arc<Acks>,
    synced: Synced,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        let client = self.channel(&node.addr).map(|c| {
            RaftClient::new(c)
                .max_decoding_message_size(nimbus_common::tls::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(nimbus_common::tls::MAX_MESSAGE_BYTES)
        });
        Peer {
            target,
            client,
            acks: self.acks.clone(),
            synced: self.synced.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

type RpcResult<T, E> = Result<T, RPCError<u64, BasicNode, E>>;

impl Peer {
    /// Sends one message and decodes the peer's `Result<Resp, E>`.
    async fn call<Req, Resp, E>(&mut self, kind: RpcKind, req: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&TransportError(e.clone())))),
        };
        let data = postcard::to_allocvec(req)
            .map_err(|e| RPCError::Network(NetworkError::new(&TransportError(e.to_string()))))?;
        let mut request = tonic::Request::new(RaftPayload {
            data,
            target: self.target,
        });
        request.set_timeout(option.hard_ttl());
        let reply = match kind {
            RpcKind::Append => client.append_entries(request).await,
            RpcKind::Vote => client.vote(request).await,
            RpcKind::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|s| {
            let e = TransportError(format!("peer {}: {}", self.target, s.message()));
            match s.code() {
                tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            }
        })?;
        let decoded: Result<Resp, E> = postcard::from_bytes(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&TransportError(e.to_string()))))?;
        decoded.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
    }
}

enum RpcKind {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, RaftError<u64>> {
        // Taken before the message leaves: the lease may only start earlier
        // than the peer's own timers, never later.
        let sent = Instant::now();
        let reply = self.call(RpcKind::Append, &rpc, &option).await;
        match &reply {
            // A conflict, too, means the peer took our vote (it checks the
            // vote before the log).
            Ok(
                AppendEntriesResponse::Success
                | AppendEntriesResponse::PartialSuccess(_)
                | AppendEntriesResponse::Conflict,
            ) => self.acks.record(self.target, rpc.vote, sent),
            Ok(AppendEntriesResponse::HigherVote(_)) | Err(_) => {}
        }
        // The peer has the entries on its disk. openraft counts the leader's
        // own copy before it is fsynced (see `durable`), so the peer's may
        // only count once the leader's is on disk too: then any majority
        // that commits an entry holds two copies on disk.
        let through = match &reply {
            Ok(AppendEntriesResponse::Success) => rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id),
            Ok(AppendEntriesResponse::PartialSuccess(matching)) => *matching,
            _ => None,
        };
        if let Some(log_id) = through {
            let left = option.hard_ttl().saturating_sub(sent.elapsed());
            if let Err(e) = self.synced.wait_through(log_id.index, left).await {
                return Err(RPCError::Network(NetworkError::new(&e)));
            }
        }
        reply
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        self.call(RpcKind::Snapshot, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> RpcResult<VoteResponse<u64>, RaftError<u64>> {
        self.call(RpcKind::Vote, &rpc, &option).await
    }
}
