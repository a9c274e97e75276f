//! The gRPC services of a meta server: namespace, administration, Raft.

mod accounts;
mod admin;
pub mod auth;
mod convert;
mod namespace;
mod raft;

pub use accounts::AccountService;
pub use admin::{AdminService, NodeFacts};
pub use namespace::NamespaceService;
pub use raft::RaftService;

use crate::commit::ServeError;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

impl From<ServeError> for Status {
    fn from(e: ServeError) -> Status {
        match e {
            ServeError::NotLeader { leader } => {
                let mut status = nimbus_proto::Reason::NotLeader.tag(Status::failed_precondition("not the leader"));
                if let Some((id, addr)) = leader {
                    let md = status.metadata_mut();
                    if let Ok(v) = MetadataValue::try_from(addr.as_str()) {
                        md.insert(nimbus_proto::LEADER_ADDR_KEY, v);
                    }
                    md.insert(nimbus_proto::LEADER_ID_KEY, MetadataValue::from(id));
                }
                status
            }
            ServeError::Unavailable(m) => Status::unavailable(m),
        }
    }
}

/// Refuses requests that carry no certificate of the cluster CA: services
/// meant for meta and data servers and operators only. Without TLS
/// (`--insecure`) there is nothing to check.
fn require_cluster_cert<T>(tls: bool, request: &Request<T>) -> Result<(), Status> {
    if tls && request.peer_certs().is_none_or(|c| c.is_empty()) {
        return Err(Status::permission_denied(
            "this service needs a certificate of the cluster CA",
        ));
    }
    Ok(())
}
